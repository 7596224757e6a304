/* Included into every file of zstd-napi's native build (scripts/build-native, and npm ci as
   scripts/lib/common.sh runs it): glibc 2.34 moved pthread_create and pthread_join into libc under a
   new symbol version; their older versions are the same functions and still exported, so the binary
   asks for those and loads on glibcs older than the build host's (Ubuntu 20.04, RHEL 8). */
#ifndef __ASSEMBLER__
#if defined(__x86_64__)
__asm__(".symver pthread_create,pthread_create@GLIBC_2.2.5");
__asm__(".symver pthread_join,pthread_join@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver pthread_create,pthread_create@GLIBC_2.17");
__asm__(".symver pthread_join,pthread_join@GLIBC_2.17");
#endif
#endif
