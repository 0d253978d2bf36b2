#include "cuda_backend.h"

namespace fsig::cuda {
bool compiled() { return false; }
int device_count() { return 0; }
}  // namespace fsig::cuda
