#include "read_pins.h"

#include "chunk_cache.h"

namespace lazystore {

PinnedFile::~PinnedFile() {
  if (file) cache.release(file);
}

}  // namespace lazystore
