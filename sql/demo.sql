-- gpt2 for SQLite: a tour. Run by `make demo` as
--   GPT2_MODEL=models/gpt2 sqlite3 -cmd ".load build/gpt2" :memory: < sql/demo.sql
-- (the first function that needs a model loads $GPT2_MODEL; gpt2_load(dir) does it explicitly).
.mode box
.timer off

SELECT 'model' AS what, gpt2_info() AS value;

-- Tokenizer: GPT-2's byte-level BPE.
SELECT gpt2_tokenize('Hello world') AS ids,
       gpt2_token_count('The quick brown fox jumps over the lazy dog.') AS n,
       gpt2_detokenize('[15496, 995]') AS text;

-- Greedy continuation (temperature 0 is the default).
SELECT gpt2_generate('Once upon a time', 24) AS greedy;

-- Seeded sampling: the same seed gives the same text on any machine.
SELECT gpt2_generate('The meaning of life is', 24, 0.8, 40, 0.95, 42) AS sampled,
       gpt2_generate('The meaning of life is', 24, 0.8, 40, 0.95, 42) =
       gpt2_generate('The meaning of life is', 24, 0.8, 40, 0.95, 42) AS reproducible;

-- Streaming: one row per token, computed only when asked for (LIMIT 8 runs 8 steps).
SELECT i, token_id, token, round(logprob, 3) AS logprob
  FROM gpt2_stream('In a shocking finding, scientists', 32) LIMIT 8;

-- Completing the rows of a table: gpt2_complete runs the query and generates
-- for all its rows in batches (one forward step per token for the whole batch).
CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT, continuation TEXT);
INSERT INTO docs(body) VALUES ('The weather today is'), ('My favourite food is'),
  ('SQLite is'), ('The best way to learn is'), (NULL);
UPDATE docs SET continuation = c.completion
  FROM gpt2_complete('SELECT id, body FROM docs WHERE continuation IS NULL', 12) AS c
 WHERE docs.id = c.key;
SELECT id, body, continuation FROM docs;

-- A longer job: on a terminal, gpt2_complete draws a progress bar on stderr
-- (rows done of the total, tokens/s, time left; gpt2_set('progress', 0) turns it
-- off) and gpt2_progress() reports the same figures to programs.
SELECT count(*) AS rows, sum(n_tokens) AS tokens
  FROM gpt2_complete('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 48)
                      SELECT i, ''Story number '' || i || '' begins:'' FROM n', 24);
SELECT gpt2_progress() AS progress;

-- Row at a time works too (the model is loaded once per connection).
SELECT body, gpt2_generate(body, 6) AS short FROM docs WHERE id <= 2;

-- Several models per connection.
SELECT name, current, n_layer, n_embd, n_params, dtype FROM gpt2_models;

SELECT json_extract(gpt2_info(), '$.counters') AS work_done;
