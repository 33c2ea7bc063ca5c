/*
** progress.c — a long job's figures and its one-line bar on stderr.
*/
#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DRAW_EVERY 0.2 /* seconds between redraws */
#define BAR_WIDTH 24

double progress_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_begin(Gpt2Progress *p, const char *what, int64_t rows_total, int mode) {
  memset(p, 0, sizeof *p);
  p->what = what;
  p->running = 1;
  p->rows_total = rows_total;
  p->t_start = p->t_now = progress_clock();
  p->draw = mode == 2 || (mode == 1 && isatty(STDERR_FILENO));
}

double progress_tokens_per_s(const Gpt2Progress *p) {
  double dt = p->t_now - p->t_start;
  return dt > 0 ? (double)p->tokens / dt : 0;
}

double progress_seconds_left(const Gpt2Progress *p) {
  double dt = p->t_now - p->t_start;
  if (p->rows_total < 0 || p->rows_done <= 0 || dt <= 0) return -1;
  int64_t left = p->rows_total > p->rows_done ? p->rows_total - p->rows_done : 0;
  return (double)left * dt / (double)p->rows_done;
}

/* "1h02m", "3m07s", "12s" */
static void fmt_duration(char *out, size_t n, double s) {
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(out, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60) snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
  else snprintf(out, n, "%lds", t);
}

/* One write: the line, from its start, erasing what was there. */
static void draw(Gpt2Progress *p) {
  char line[320], bar[BAR_WIDTH + 1], eta[64] = "";
  size_t k = 0;
  if (p->rows_total > 0) {
    int64_t done = p->rows_done < p->rows_total ? p->rows_done : p->rows_total;
    int fill = (int)(done * BAR_WIDTH / p->rows_total);
    for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = 0;
    double left = progress_seconds_left(p);
    if (left >= 0) {
      char d[48];
      fmt_duration(d, sizeof d, left);
      snprintf(eta, sizeof eta, "  %s left", d);
    }
    k = (size_t)snprintf(line, sizeof line, "\r\033[K%s [%s] %lld/%lld rows  %.1f tok/s%s",
                         p->what, bar, (long long)p->rows_done, (long long)p->rows_total,
                         progress_tokens_per_s(p), eta);
  } else {
    k = (size_t)snprintf(line, sizeof line, "\r\033[K%s %lld rows  %.1f tok/s", p->what,
                         (long long)p->rows_done, progress_tokens_per_s(p));
  }
  if (k >= sizeof line) k = sizeof line - 1;
  ssize_t w = write(STDERR_FILENO, line, k); /* best effort: a failed write is not an error */
  (void)w;
  p->t_drawn = p->t_now;
}

void progress_add(Gpt2Progress *p, int64_t rows, int64_t tokens) {
  p->rows_done += rows;
  p->tokens += tokens;
  p->t_now = progress_clock();
  if (p->draw && p->t_now - p->t_drawn >= DRAW_EVERY) draw(p);
}

void progress_end(Gpt2Progress *p) {
  if (!p->running) return;
  p->running = 0;
  p->t_now = progress_clock();
  if (p->draw && p->t_drawn > 0) {
    ssize_t w = write(STDERR_FILENO, "\r\033[K", 4);
    (void)w;
  }
}
