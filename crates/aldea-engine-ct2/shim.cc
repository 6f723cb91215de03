// The one thing ct2rs does not expose: reading a CTranslate2 StorageView's values on the host.
// The CTranslate2 headers come from the ct2rs package itself (build.rs finds them), so they always
// match the library ct2rs compiles and links.

#include <cstddef>
#include <cstring>

#include "ctranslate2/storage_view.h"

// Copies `len` float32 values of a CPU StorageView into `out`. Returns 0 on success, 1 when the view
// is not on the CPU, 2 when it is not float32, 3 when its size is not `len`, 4 on any exception.
extern "C" int aldea_ct2_copy_f32(const void* view, float* out, std::size_t len) noexcept {
  try {
    const auto* storage = static_cast<const ctranslate2::StorageView*>(view);
    if (storage->device() != ctranslate2::Device::CPU)
      return 1;
    if (storage->dtype() != ctranslate2::DataType::FLOAT32)
      return 2;
    if (static_cast<std::size_t>(storage->size()) != len)
      return 3;
    std::memcpy(out, storage->buffer(), len * sizeof(float));
    return 0;
  } catch (...) {
    return 4;
  }
}
