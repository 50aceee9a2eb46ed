/* An LD_PRELOAD shim for fault tests: makes fsync/fdatasync slow or failing on demand, so the
 * real ledgerqd and its real RocksDB meet a stuck or broken disk. Controlled by files, so a test
 * can change the fault while the daemon runs:
 *   $LEDGERQ_FAULT_DIR/fsync_delay_ms  holds a number: each sync sleeps that long first;
 *   $LEDGERQ_FAULT_DIR/fsync_eio       exists: each sync fails with EIO.
 * Test-only; never linked into ledgerqd. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int fault(void) {
  const char* dir = getenv("LEDGERQ_FAULT_DIR");
  if (!dir) return 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/fsync_delay_ms", dir);
  FILE* f = fopen(path, "r");
  if (f) {
    long ms = 0;
    if (fscanf(f, "%ld", &ms) == 1 && ms > 0) {
      struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
      while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
      }
    }
    fclose(f);
  }
  snprintf(path, sizeof path, "%s/fsync_eio", dir);
  if (access(path, F_OK) == 0) {
    errno = EIO;
    return -1;
  }
  return 0;
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  if (fault() != 0) return -1;
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  if (fault() != 0) return -1;
  return real(fd);
}
