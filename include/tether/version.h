/* SPDX-License-Identifier: MIT */
/**
 * @file version.h
 * @brief Compile-time version of the tether headers.
 *
 * CMake reads the version from this file, so it is the one place to change.
 * At run time, tether_version() returns the library's own version.
 *
 * @defgroup version Version and linking
 * @brief Compile-time and run-time versions, and what keeps the ABI stable.
 *
 * The macros below give the version of the headers a program was compiled
 * with; tether_version() gives the version of the library it runs with.
 * They differ only when a program built against one release runs with
 * another, which the shared library's versioned soname (`libtether.so.0`,
 * changed only when the ABI breaks) keeps safe: handles are opaque, and
 * every options struct starts with its own size, filled in by its
 * `*_opts_init()` macro, so a newer library knows which fields an older
 * program set. Link with `pkg-config --cflags --libs tether` or CMake's
 * `find_package(tether)` and `tether::tether` (shared) or
 * `tether::tether_static`. Only the static library needs the development
 * files of OpenSSL 3 and c-ares where the program is built: CMake looks
 * them up for `find_package(tether COMPONENTS static)` (which fails with a
 * message naming what is missing), quietly for a plain
 * `find_package(tether)` (which then offers only `tether::tether` if they
 * are absent), and not at all for `find_package(tether COMPONENTS shared)`.
 *
 * Thread-safety: everything in this group is thread-safe.
 * @{
 */
#ifndef TETHER_VERSION_H
#define TETHER_VERSION_H

#include <tether/export.h>

/** @brief Major version: changes break the API or ABI. */
#define TETHER_VERSION_MAJOR 0
/** @brief Minor version: new features, backwards compatible. */
#define TETHER_VERSION_MINOR 1
/** @brief Patch version: fixes only. */
#define TETHER_VERSION_PATCH 0
/** @brief The version as a string literal. */
#define TETHER_VERSION_STRING "0.1.0"
/** @brief The version as one comparable number: major * 10000 + minor * 100 + patch. */
#define TETHER_VERSION_NUMBER                                                                      \
    (TETHER_VERSION_MAJOR * 10000 + TETHER_VERSION_MINOR * 100 + TETHER_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief The library's version at run time, e.g. "0.1.0".
 *
 * Compare with #TETHER_VERSION_STRING to detect a header/library mismatch.
 * Thread-safe.
 * @return A static string.
 */
TETHER_API const char *tether_version(void);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_VERSION_H */
/** @} */
