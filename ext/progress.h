/*
** progress.h — where a long job is (owns: the figures of one running or
** finished job — rows done and total, tokens, elapsed time — and the
** one-line bar drawn for them on stderr).
**
** A connection keeps one Gpt2Progress: gpt2_complete updates it as rows
** finish, gpt2_progress() reports it, and the bar is drawn when asked to
** (the connection's progress setting; by default only when stderr is a
** terminal). Drawing is throttled to a few times a second.
*/
#ifndef GPT2_PROGRESS_H
#define GPT2_PROGRESS_H

#include <stdint.h>

typedef struct Gpt2Progress {
  const char *what;   /* the function running ("gpt2_complete"), NULL before any */
  int running;        /* 1 until progress_end */
  int64_t rows_done;  /* rows finished */
  int64_t rows_total; /* rows the job has, -1 when not known */
  int64_t tokens;     /* tokens produced */
  double t_start;     /* monotonic seconds at progress_begin */
  double t_now;       /* at the last update */
  double t_drawn;     /* when the bar was last drawn, 0: never */
  int draw;           /* draw the bar on stderr */
} Gpt2Progress;

/* Monotonic seconds. */
double progress_clock(void);

/* Start a job: mode 0 never draws, 1 draws when stderr is a terminal, 2
** always draws. */
void progress_begin(Gpt2Progress *p, const char *what, int64_t rows_total, int mode);
/* rows and tokens finished since the last call; redraws when due. */
void progress_add(Gpt2Progress *p, int64_t rows, int64_t tokens);
/* The job is over (done, failed or abandoned): the bar is cleared. */
void progress_end(Gpt2Progress *p);

/* Derived figures: tokens per second so far, and seconds left (-1 when
** unknown). */
double progress_tokens_per_s(const Gpt2Progress *p);
double progress_seconds_left(const Gpt2Progress *p);

#endif
