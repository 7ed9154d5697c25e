// The libfuse API lazystore is written against. Include this instead of <fuse_lowlevel.h>, so
// that every file sees the same FUSE_USE_VERSION (and none needs the option parser for it).
#pragma once

#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 14)
#include <fuse_lowlevel.h>
