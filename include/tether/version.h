/**
 * @file version.h
 * @brief Compile-time version of the tether headers.
 *
 * CMake reads the version from this file, so it is the one place to change.
 * At run time, tether_version() returns the library's own version.
 */
#ifndef TETHER_VERSION_H
#define TETHER_VERSION_H

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

#endif /* TETHER_VERSION_H */
