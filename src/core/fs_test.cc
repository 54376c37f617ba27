// The tools' output helpers. RenameNoReplace: the last step of import and
// export must never replace what another program put at the output path
// meanwhile. The path helpers name OUT's temporary sibling and parent.
#include "l2l/core/fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
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

TEST(Paths, TrailingSlashesNameTheSameEntry) {
  EXPECT_EQ(WithoutTrailingSlashes("out/"), "out");
  EXPECT_EQ(WithoutTrailingSlashes("a/out//"), "a/out");
  EXPECT_EQ(WithoutTrailingSlashes("out"), "out");
  EXPECT_EQ(WithoutTrailingSlashes("/"), "/");
  EXPECT_EQ(WithoutTrailingSlashes("//"), "/");
  EXPECT_EQ(WithoutTrailingSlashes(""), "");
}

TEST(Paths, ParentDirIsTextual) {
  EXPECT_EQ(ParentDir("out"), ".");
  EXPECT_EQ(ParentDir("out/"), ".");
  EXPECT_EQ(ParentDir("a/b"), "a");
  EXPECT_EQ(ParentDir("a/b/"), "a");
  EXPECT_EQ(ParentDir("/x"), "/");
  EXPECT_EQ(ParentDir("/a/b/step-00000001.h5"), "/a/b");
  EXPECT_EQ(ParentDir("../b"), "..");
}

TEST(WriteFileDurably, WritesTruncatesAndNamesThePathOnFailure) {
  const std::string path = "/tmp/l2l_fs_test_write_" + std::to_string(::getpid());
  ASSERT_TRUE(WriteFileDurably(path, "a longer first text").ok());
  ASSERT_TRUE(WriteFileDurably(path, std::string("x\0y", 3)).ok());
  std::ifstream in(path, std::ios::binary);
  const std::string got{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  EXPECT_EQ(got, std::string("x\0y", 3));
  const std::string copy = path + ".copy";
  ASSERT_TRUE(CopyFile(path, copy).ok());
  EXPECT_TRUE(IsFile(copy));
  ::unlink(copy.c_str());
  ::unlink(path.c_str());

  const std::string nowhere = "/tmp/l2l_fs_test_no_such_dir_" + std::to_string(::getpid()) + "/f";
  const Status s = WriteFileDurably(nowhere, "x");
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message().rfind(nowhere + ": cannot create (", 0), 0u) << s.message();
  const Status c = CopyFile(nowhere, path);
  EXPECT_EQ(c.code(), StatusCode::kNotFound);
  EXPECT_EQ(c.message(), nowhere + ": cannot open (No such file or directory)");
  // An I/O error while reading is a Status, not an exception: reading
  // /proc/self/mem from address 0 fails with EIO.
  const StatusOr<std::string> eio = ReadFile("/proc/self/mem");
  EXPECT_EQ(eio.status().code(), StatusCode::kIoError);
  EXPECT_EQ(eio.status().message().rfind("/proc/self/mem: read failed (", 0), 0u)
      << eio.status().message();
  EXPECT_FALSE(Exists(path));
}

// A FIFO given as a file (a config, a token file, `latest`) must be refused
// at once: open(2) of a FIFO without a writer blocks forever.
TEST(OpenRegularFile, RefusesAFifoAndADirectoryWithoutBlocking) {
  const std::string fifo = "/tmp/l2l_fs_test_fifo_" + std::to_string(::getpid());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const StatusOr<std::string> f = ReadFile(fifo);
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(f.status().message(), fifo + ": not a regular file (a FIFO)");
  ::unlink(fifo.c_str());
  const StatusOr<int> d = OpenRegularFile("/tmp");
  EXPECT_EQ(d.status().message(), "/tmp: not a regular file (a directory)");
  // A regular file opens, and reads block again (O_NONBLOCK cleared).
  const StatusOr<int> self = OpenRegularFile("/proc/self/status");
  ASSERT_TRUE(self.ok()) << self.status().message();
  EXPECT_EQ(::fcntl(*self, F_GETFL) & O_NONBLOCK, 0);
  ::close(*self);
}

TEST(Printable, EscapesControlAndHighBytesAndCuts) {
  EXPECT_EQ(Printable("step-1.h5"), "step-1.h5");
  EXPECT_EQ(Printable(std::string("a\nb\0\xff", 5)), "a\\x0ab\\x00\\xff");
  EXPECT_EQ(Printable(std::string(100, 'x'), 4), "xxxx...");
}

TEST(ExclusiveLock, SecondHolderIsRefusedNamingTheFirstUntilItIsReleased) {
  const std::string path = "/tmp/l2l_fs_test_lock_" + std::to_string(::getpid());
  {
    StatusOr<ExclusiveLock> first = ExclusiveLock::Acquire(path);
    ASSERT_TRUE(first.ok()) << first.status().message();
    // flock is per open file: a second open of the same file conflicts even
    // in this process, as another job's would.
    const StatusOr<ExclusiveLock> second = ExclusiveLock::Acquire(path);
    EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(second.status().message().find(" pid " + std::to_string(::getpid())),
              std::string::npos)
        << second.status().message();
    ExclusiveLock moved = std::move(*first);  // the move keeps the lock
    EXPECT_FALSE(ExclusiveLock::Acquire(path).ok());
  }
  EXPECT_TRUE(ExclusiveLock::Acquire(path).ok());
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace l2l::fs
