#include "l2l/comm/comm.h"

#include <climits>
#include <vector>

namespace l2l {

size_t CommDTypeSizeBytes(CommDType t) {
  switch (t) {
    case CommDType::kF32:
      return 4;
    case CommDType::kF64:
      return 8;
    case CommDType::kI32:
      return 4;
    case CommDType::kI64:
    case CommDType::kU64:
      return 8;
    case CommDType::kU8:
      return 1;
    case CommDType::kBF16:
      return 2;
  }
  return 0;
}

Status Comm::Agree(const Status& local) {
  // Lowest failing rank, or INT_MAX when all are OK.
  int32_t mine = local.ok() ? INT_MAX : rank();
  int32_t first = 0;
  RETURN_IF_ERROR(AllReduce(&mine, &first, 1, CommDType::kI32, ReduceOp::kMin));
  if (first == INT_MAX) return OkStatus();
  // The failing rank broadcasts its code and message so all ranks report the same line.
  int64_t header[2] = {static_cast<int64_t>(local.code()),
                       static_cast<int64_t>(local.message().size())};
  RETURN_IF_ERROR(Broadcast(header, 2, CommDType::kI64, first));
  std::vector<char> text(static_cast<size_t>(header[1]));
  if (rank() == first) text.assign(local.message().begin(), local.message().end());
  if (!text.empty()) RETURN_IF_ERROR(Broadcast(text.data(), text.size(), CommDType::kU8, first));
  return Status(static_cast<StatusCode>(header[0]), std::string(text.begin(), text.end()));
}

Status Comm::BroadcastString(std::string* s, int root) {
  int64_t n = static_cast<int64_t>(s->size());
  RETURN_IF_ERROR(Broadcast(&n, 1, CommDType::kI64, root));
  s->resize(static_cast<size_t>(n));
  if (n > 0) RETURN_IF_ERROR(Broadcast(s->data(), s->size(), CommDType::kU8, root));
  return OkStatus();
}

}  // namespace l2l
