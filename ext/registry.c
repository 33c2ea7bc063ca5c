/*
** registry.c — the process-wide table of loaded models (see registry.h).
**
** A short list (one node per model alive in the process), scanned under one
** mutex. A node's model is NULL while its first load runs; nodes whose
** model's count has reached 0 stay until that model's last release removes
** them, and lookups skip them.
*/
#include "registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* Files a load reads; their identity is part of the key. */
static const char *const FILES[] = {"config.json",  "model.safetensors",
                                    "vocab.json",   "merges.txt",
                                    "tokenizer_config.json", "special_tokens_map.json"};
#define N_FILES (sizeof FILES / sizeof FILES[0])

/* Identity of one file (all zero when it cannot be stat'ed). */
typedef struct FileId {
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtim, ctim; /* ctim: in-place rewrites that restore mtim */
} FileId;

typedef struct Node {
  struct Node *next;
  char *dir;             /* canonical directory */
  char weights[8];       /* format, lower case */
  FileId id[N_FILES];    /* as stat'ed before the load */
  Gpt2Model *m;          /* NULL while the first load runs */
  int users;             /* registry_load callers holding m */
} Node;

/* The project's only process-global mutable state (registry.h). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t load_done = PTHREAD_COND_INITIALIZER; /* a node left "loading" */
static Node *head;

static void file_ids(const char *dir, FileId *id) {
  memset(id, 0, N_FILES * sizeof *id);
  for (size_t i = 0; i < N_FILES; i++) {
    char *p = gpt2_path_join(dir, FILES[i]);
    struct stat st;
    if (p && stat(p, &st) == 0) {
      id[i].dev = st.st_dev;
      id[i].ino = st.st_ino;
      id[i].size = st.st_size;
      id[i].mtim = st.st_mtim;
      id[i].ctim = st.st_ctim;
    }
    free(p); /* OOM: identity unknown (zeros); the load will fail the same way */
  }
}

static int same_id(const FileId *a, const FileId *b) {
  for (size_t i = 0; i < N_FILES; i++)
    if (a[i].dev != b[i].dev || a[i].ino != b[i].ino || a[i].size != b[i].size ||
        a[i].mtim.tv_sec != b[i].mtim.tv_sec || a[i].mtim.tv_nsec != b[i].mtim.tv_nsec ||
        a[i].ctim.tv_sec != b[i].ctim.tv_sec || a[i].ctim.tv_nsec != b[i].ctim.tv_nsec)
      return 0;
  return 1;
}

/* Gpt2Model.on_last_release: drop m's node before m is freed. */
static void forget(const Gpt2Model *m) {
  Node *gone = NULL;
  pthread_mutex_lock(&mu);
  for (Node **pp = &head; *pp; pp = &(*pp)->next) {
    if ((*pp)->m == m) {
      gone = *pp;
      *pp = gone->next;
      break;
    }
  }
  pthread_mutex_unlock(&mu);
  if (gone) {
    free(gone->dir);
    free(gone);
  }
}

int registry_load(const char *dir, const char *weights, Gpt2Model **out, char *err,
                  size_t errlen) {
  *out = NULL;
  if (!weights || !*weights) weights = "f32";
  FileId id[N_FILES];
  file_ids(dir, id);

  pthread_mutex_lock(&mu);
  for (;;) {
    int loading = 0;
    Node *n = head;
    for (; n; n = n->next) {
      if (strcmp(n->dir, dir) != 0 || strcasecmp(n->weights, weights) != 0 || !same_id(n->id, id))
        continue;
      if (!n->m) loading = 1;
      else if (model_try_retain(n->m)) break; /* else: dying, skip it */
    }
    if (n) {
      n->users++;
      *out = n->m;
      pthread_mutex_unlock(&mu);
      return GPT2_OK;
    }
    if (!loading) break;
    pthread_cond_wait(&load_done, &mu); /* then look again: shared, or its load failed */
  }
  /* Ours to load: a placeholder makes later callers of this key wait. */
  Node *n = calloc(1, sizeof *n);
  if (n) n->dir = strdup(dir);
  if (!n || !n->dir) {
    pthread_mutex_unlock(&mu);
    if (n) free(n);
    return GPT2_NOMEM;
  }
  size_t k = 0;
  for (; weights[k] && k + 1 < sizeof n->weights; k++)
    n->weights[k] = (char)(weights[k] >= 'A' && weights[k] <= 'Z' ? weights[k] + 32 : weights[k]);
  if (weights[k]) n->weights[0] = '?'; /* too long to be a format: never matches, fails below */
  memcpy(n->id, id, sizeof id);
  n->next = head;
  head = n;
  pthread_mutex_unlock(&mu);

  Gpt2LoadOptions o = {.weights = weights};
  Gpt2Model *m = NULL;
  int rc = model_load_opts(dir, &o, &m, err, errlen);

  pthread_mutex_lock(&mu);
  if (rc == GPT2_OK) {
    m->on_last_release = forget;
    n->m = m;
    n->users = 1;
  } else {
    for (Node **pp = &head; *pp; pp = &(*pp)->next) {
      if (*pp == n) {
        *pp = n->next;
        break;
      }
    }
  }
  pthread_cond_broadcast(&load_done);
  pthread_mutex_unlock(&mu);
  if (rc != GPT2_OK) {
    free(n->dir);
    free(n);
  }
  *out = m;
  return rc;
}

void registry_unuse(const Gpt2Model *m) {
  if (!m) return;
  pthread_mutex_lock(&mu);
  for (Node *n = head; n; n = n->next) {
    if (n->m == m) {
      n->users--;
      break;
    }
  }
  pthread_mutex_unlock(&mu);
  model_release(m); /* outside the mutex: the last one takes it in forget() */
}

int registry_users(const Gpt2Model *m) {
  int users = 0;
  pthread_mutex_lock(&mu);
  for (Node *n = head; n; n = n->next) {
    if (n->m == m) {
      users = n->users;
      break;
    }
  }
  pthread_mutex_unlock(&mu);
  return users;
}
