// fault_tests' main: mounting a size-limited tmpfs (the disk-full test) needs root or
// CAP_SYS_ADMIN. Without it the whole executable reports "skipped" (exit 77, which CTest shows
// as Skipped) instead of passing without testing.
#define CATCH_CONFIG_RUNNER
#include <sys/mount.h>

#include <catch2/catch.hpp>
#include <cstdio>

#include "tests/support/temp_dir.h"

int main(int argc, char** argv) {
  {
    ledgerq::testing::TempDir probe;
    if (::mount("tmpfs", probe.path().c_str(), "tmpfs", 0, "size=1m") != 0) {
      std::perror("fault_tests: cannot mount a tmpfs (needs root or CAP_SYS_ADMIN); skipped");
      return 77;
    }
    ::umount(probe.path().c_str());
  }
  return Catch::Session().run(argc, argv);
}
