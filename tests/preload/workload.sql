-- SPDX-License-Identifier: MIT
-- An allocation-heavy sqlite3 session with deterministic output: a table filled through a
-- recursive CTE, an index, grouping, ordering, string building and a self-join.
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, val REAL, payload BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
INSERT INTO t(id, grp, name, val, payload)
SELECT i, (i * 7919) % 97, 'name-' || ((i * 104729) % 100003), (i % 1000) / 7.0,
       zeroblob(1 + (i % 700))
FROM n;
CREATE INDEX t_grp ON t(grp, name);
SELECT grp, count(*), sum(length(payload)), round(avg(val), 6), min(name), max(name)
FROM t GROUP BY grp ORDER BY grp;
SELECT name, count(*) AS c FROM t GROUP BY name HAVING c > 2 ORDER BY c DESC, name LIMIT 20;
SELECT a.grp, count(*), round(sum(b.val), 3) FROM t a JOIN t b ON b.id = a.id + 1
GROUP BY a.grp ORDER BY a.grp LIMIT 10;
SELECT grp, count(*) FROM (SELECT grp, lag(grp, 97) OVER (ORDER BY id) AS prev FROM t)
WHERE grp = prev GROUP BY grp ORDER BY grp LIMIT 5;
SELECT length(group_concat(name, ',')) FROM (SELECT name FROM t ORDER BY name DESC LIMIT 50000);
UPDATE t SET name = upper(name) || '-' || grp WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
SELECT count(*), sum(length(name)), total(val) FROM t;
SELECT id, name FROM t ORDER BY name DESC, id LIMIT 5;
