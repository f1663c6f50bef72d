/* SPDX-License-Identifier: MIT */
/* Helpers shared by file_send.c and file_recv.c. Not part of tether: a
 * program of your own would have its own versions of these. */
#ifndef TETHER_EXAMPLES_FILE_COMMON_H
#define TETHER_EXAMPLES_FILE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum progress_mode {
    PROGRESS_AUTO,
    PROGRESS_BAR,
    PROGRESS_LINES,
    PROGRESS_NONE
};

/* Progress on stderr: a bar on a terminal, a line per 10 % otherwise. */
struct progress {
    enum progress_mode mode; /* BAR, LINES or NONE once decided */
    uint64_t total;
    uint64_t start_ms;
    uint64_t last_draw_ms;
    int last_tenth; /* LINES: the last 10 % step printed */
};

/* "auto", "bar", "lines" or "none" (the --progress option). */
bool parse_progress(const char *s, enum progress_mode *out);
/* AUTO becomes BAR when stderr is a terminal, LINES otherwise. */
void progress_start(struct progress *p, enum progress_mode mode, uint64_t total, uint64_t now_ms);
/* done bytes of total at now_ms; final draws the last state and ends the line. */
void progress_update(struct progress *p, uint64_t done, uint64_t now_ms, bool final);

/* 8-byte big-endian integers, as the protocol carries sizes and offsets. */
void put_u64(uint8_t *p, uint64_t v);
uint64_t get_u64(const uint8_t *p);
/* n bytes as 2n lowercase hex digits and a NUL. */
void hex(char *out, const uint8_t *d, size_t n);

#endif
