/* Reads a list of files fully and reports the time: the raw libnfs lower bound of nfs_bench.py,
 * and (posix mode) the same access pattern through any mounted file system.
 *
 *   nfs_raw_read nfs   'nfs://127.0.0.1/store?version=4&nfsport=N' JOBS < LIST
 *   nfs_raw_read posix DIR                                         JOBS < LIST
 *   nfs_raw_read walk  'nfs://...'                                  1    < LIST
 *
 * LIST: one "SIZE<TAB>RELATIVE/PATH" line per regular file. Work items are 1 MiB pieces of the
 * files in list order (an empty file is one item: it is still opened); JOBS threads take the
 * next item from a shared counter, so JOBS=1 is `cat` of every file in order with 1 MiB reads,
 * and JOBS=N reads N pieces at a time (a large file is read by all threads at once). nfs mode:
 * one nfs_context per thread (libnfs 4.0 contexts are not thread-safe), each its own NFSv4
 * client, sync API, one READ per piece (NFSv4 READs over 1 MiB fail in libnfs 4.0). Each thread
 * keeps the file of its last piece open. Connecting (mount) is inside the timed span.
 *
 * walk mode: LIST names directories ("0<TAB>DIR"); each is walked recursively on one context, the
 * way the daemon lists a store path (opendir = READDIR with attributes, readlink per symlink),
 * and "files" is the number of entries (every directory, file and symlink, the tops included).
 *
 * Prints one JSON object: bytes, expected bytes, files, seconds, connect_seconds.
 * Build: cc -O2 -pthread nfs_raw_read.c -lnfs (libnfs 4.0 needs <sys/time.h> before libnfs.h).
 */
#define _GNU_SOURCE
#include <sys/time.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <nfsc/libnfs.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PIECE (1u << 20)

struct file {
  char* path;
  uint64_t size;
};
struct item {
  uint32_t file;
  uint64_t offset;
};

static struct file* files;
static size_t nfiles;
static struct item* items;
static size_t nitems;
static atomic_size_t next_item;
static atomic_uint_fast64_t total_bytes;
static int nfs_mode;
static const char* target;
static double connect_done; /* latest time a thread finished connecting */
static pthread_mutex_t connect_lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char* what, const char* detail) {
  fprintf(stderr, "nfs_raw_read: %s: %s\n", what, detail);
  exit(1);
}

static struct nfs_context* nfs_connect(unsigned serial) {
  struct nfs_context* ctx = nfs_init_context();
  if (!ctx) die("nfs_init_context", "failed");
  struct nfs_url* url = nfs_parse_url_dir(ctx, target);
  if (!url) die("nfs_parse_url_dir", nfs_get_error(ctx));
  nfs_set_timeout(ctx, 30000);
  /* Each context its own NFSv4 client, as the daemon does. */
  char name[128], verifier[8];
  snprintf(name, sizeof name, "nfs-raw-read-%d-%u-%ld", (int)getpid(), serial, (long)random());
  nfs4_set_client_name(ctx, name);
  for (int i = 0; i < 8; i++) verifier[i] = (char)random();
  nfs4_set_verifier(ctx, verifier);
  if (nfs_mount(ctx, url->server, url->path) != 0) die("nfs_mount", nfs_get_error(ctx));
  nfs_destroy_url(url);
  return ctx;
}

static uint64_t walk_dir(struct nfs_context* ctx, const char* path) {
  struct nfsdir* dir;
  if (nfs_opendir(ctx, path, &dir) != 0) die(path, nfs_get_error(ctx));
  uint64_t entries = 1;
  size_t cap = 16, n = 0;
  char** subdirs = malloc(cap * sizeof *subdirs);
  struct nfsdirent* e;
  while ((e = nfs_readdir(ctx, dir)) != NULL) {
    if (strcmp(e->name, ".") == 0 || strcmp(e->name, "..") == 0) continue;
    char child[8192];
    snprintf(child, sizeof child, "%s/%s", path, e->name);
    if (S_ISDIR(e->mode)) {
      if (n == cap) subdirs = realloc(subdirs, (cap *= 2) * sizeof *subdirs);
      subdirs[n++] = strdup(child);
    } else {
      entries++;
      if (S_ISLNK(e->mode)) {
        char target[4096];
        if (nfs_readlink(ctx, child, target, sizeof target) != 0) die(child, nfs_get_error(ctx));
      }
    }
  }
  nfs_closedir(ctx, dir);
  for (size_t i = 0; i < n; i++) {
    entries += walk_dir(ctx, subdirs[i]);
    free(subdirs[i]);
  }
  free(subdirs);
  return entries;
}

static void* worker(void* arg) {
  unsigned serial = (unsigned)(uintptr_t)arg;
  struct nfs_context* ctx = NULL;
  char* buf = malloc(PIECE);
  if (!buf) die("malloc", strerror(ENOMEM));
  if (nfs_mode) ctx = nfs_connect(serial);
  pthread_mutex_lock(&connect_lock);
  double t = now();
  if (t > connect_done) connect_done = t;
  pthread_mutex_unlock(&connect_lock);

  long open_file = -1;
  struct nfsfh* fh = NULL;
  int fd = -1;
  uint64_t bytes = 0;
  for (;;) {
    size_t i = atomic_fetch_add(&next_item, 1);
    if (i >= nitems) break;
    const struct item* it = &items[i];
    const struct file* f = &files[it->file];
    if ((long)it->file != open_file) {
      if (fh) nfs_close(ctx, fh);
      if (fd >= 0) close(fd);
      fh = NULL;
      fd = -1;
      char path[8192];
      if (nfs_mode) {
        snprintf(path, sizeof path, "/%s", f->path);
        if (nfs_open(ctx, path, O_RDONLY, &fh) != 0) die(path, nfs_get_error(ctx));
      } else {
        snprintf(path, sizeof path, "%s/%s", target, f->path);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die(path, strerror(errno));
      }
      open_file = (long)it->file;
    }
    if (it->offset >= f->size) continue; /* an empty file: opened, nothing to read */
    uint64_t want = f->size - it->offset < PIECE ? f->size - it->offset : PIECE;
    uint64_t got = 0;
    while (got < want) {
      long n = nfs_mode ? nfs_pread(ctx, fh, it->offset + got, want - got, buf)
                        : pread(fd, buf, want - got, (off_t)(it->offset + got));
      if (n < 0) die(f->path, nfs_mode ? nfs_get_error(ctx) : strerror(errno));
      if (n == 0) break;
      got += (uint64_t)n;
    }
    bytes += got;
  }
  if (fh) nfs_close(ctx, fh);
  if (fd >= 0) close(fd);
  if (ctx) nfs_destroy_context(ctx);
  free(buf);
  atomic_fetch_add(&total_bytes, bytes);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 4 || (strcmp(argv[1], "nfs") != 0 && strcmp(argv[1], "posix") != 0 && strcmp(argv[1], "walk") != 0)) {
    fprintf(stderr, "usage: %s nfs|walk URL JOBS < LIST | %s posix DIR JOBS < LIST\n", argv[0], argv[0]);
    return 2;
  }
  nfs_mode = strcmp(argv[1], "posix") != 0;
  int walk_mode = strcmp(argv[1], "walk") == 0;
  target = argv[2];
  int jobs = atoi(argv[3]);
  if (jobs < 1 || jobs > 256) die("JOBS", "must be 1..256");
  srandom((unsigned)(getpid() ^ (unsigned)time(NULL)));

  size_t cap = 0, icap = 0;
  uint64_t expected = 0;
  char* line = NULL;
  size_t len = 0;
  ssize_t n;
  while ((n = getline(&line, &len, stdin)) > 0) {
    if (line[n - 1] == '\n') line[--n] = '\0';
    char* tab = strchr(line, '\t');
    if (!tab) die("LIST", "a line without a tab");
    *tab = '\0';
    if (nfiles == cap) files = realloc(files, (cap = cap ? cap * 2 : 1024) * sizeof *files);
    files[nfiles].size = strtoull(line, NULL, 10);
    files[nfiles].path = strdup(tab + 1);
    expected += files[nfiles].size;
    uint64_t pieces = files[nfiles].size ? (files[nfiles].size + PIECE - 1) / PIECE : 1;
    for (uint64_t p = 0; p < pieces; p++) {
      if (nitems == icap) items = realloc(items, (icap = icap ? icap * 2 : 4096) * sizeof *items);
      items[nitems].file = (uint32_t)nfiles;
      items[nitems].offset = p * PIECE;
      nitems++;
    }
    nfiles++;
  }
  free(line);

  if (walk_mode) {
    double started = now();
    struct nfs_context* ctx = nfs_connect(0);
    double connected = now();
    uint64_t entries = 0;
    for (size_t i = 0; i < nfiles; i++) {
      char path[8192];
      snprintf(path, sizeof path, "/%s", files[i].path);
      entries += walk_dir(ctx, path);
    }
    double seconds = now() - started;
    nfs_destroy_context(ctx);
    printf("{\"bytes\": 0, \"expected\": 0, \"files\": %" PRIu64
           ", \"jobs\": 1, \"seconds\": %.6f, "
           "\"connect_seconds\": %.6f}\n",
           entries, seconds, connected - started);
    return 0;
  }

  pthread_t threads[256];
  double started = now();
  for (int i = 0; i < jobs; i++) pthread_create(&threads[i], NULL, worker, (void*)(uintptr_t)i);
  for (int i = 0; i < jobs; i++) pthread_join(threads[i], NULL);
  double seconds = now() - started;
  uint64_t bytes = atomic_load(&total_bytes);
  printf("{\"bytes\": %" PRIu64 ", \"expected\": %" PRIu64
         ", \"files\": %zu, \"jobs\": %d, "
         "\"seconds\": %.6f, \"connect_seconds\": %.6f}\n",
         bytes, expected, nfiles, jobs, seconds, connect_done - started);
  return bytes == expected ? 0 : 3;
}
