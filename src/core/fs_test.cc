// RenameNoReplace: the last step of import and export must never replace
// what another program put at the output path meanwhile.
#include "l2l/core/fs.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace l2l::fs {
namespace {

class RenameNoReplaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = "/tmp/l2l_files_test_" + std::to_string(::getpid());
    ASSERT_EQ(::mkdir(root_.c_str(), 0777), 0);
    from_ = root_ + "/result.tmp";
    to_ = root_ + "/result";
    ASSERT_EQ(::mkdir(from_.c_str(), 0777), 0);
    std::ofstream(from_ + "/weights") << "ours";
  }
  void TearDown() override {
    for (const std::string& d : {from_, to_}) {
      ::unlink((d + "/weights").c_str());
      ::unlink((d + "/theirs").c_str());
      ::rmdir(d.c_str());
    }
    ::rmdir(root_.c_str());
  }
  std::string root_, from_, to_;
};

TEST_F(RenameNoReplaceTest, MovesTheDirectoryWhenTheTargetIsFree) {
  ASSERT_TRUE(RenameNoReplace(from_, to_).ok());
  EXPECT_TRUE(IsFile(to_ + "/weights"));
  EXPECT_FALSE(Exists(from_));
}

// rename(2) would silently replace an empty directory.
TEST_F(RenameNoReplaceTest, RefusesAnEmptyDirectoryThatAppeared) {
  ASSERT_EQ(::mkdir(to_.c_str(), 0777), 0);
  const Status s = RenameNoReplace(from_, to_);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.message();
  EXPECT_NE(s.message().find("appeared while it was being written"), std::string::npos);
  EXPECT_TRUE(IsDir(to_));
  EXPECT_TRUE(IsFile(from_ + "/weights"));
}

TEST_F(RenameNoReplaceTest, RefusesAFileThatAppeared) {
  std::ofstream(to_) << "theirs";
  EXPECT_EQ(RenameNoReplace(from_, to_).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsFile(to_));
  ::unlink(to_.c_str());
}

}  // namespace
}  // namespace l2l::fs
