-- SPDX-License-Identifier: MIT
-- workload.sql: an in-memory SQLite workload for the allocator benchmarks (sqlite3 CLI, stdin).
-- Recursive-CTE inserts, indexes, GROUP BY, joins, window functions, updates and deletes.
-- Deterministic: no random(); pseudo-random columns come from integer hashing, so the output is
-- the same under every allocator. Size: run as `sqlite3 -cmd ".parameter set @scale 1" :memory:`
-- (@scale defaults to 1 when unset).
CREATE TEMP TABLE knob AS SELECT coalesce(CAST(@scale AS REAL), 1.0) AS scale;

CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, region INTEGER, email TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
                        WHERE x < (SELECT max(50, CAST(15000 * scale AS INTEGER)) FROM knob))
INSERT INTO customers
SELECT x,
       'customer-' || x || '-' || substr('abcdefghijklmnopqrstuvwxyz', 1 + (x * 7) % 26, 1 + (x * 13) % 20),
       (x * 2654435761) % 97,
       lower(hex((x * 40503) % 1000003)) || '@example.invalid'
FROM c;

CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER, amount INTEGER, day INTEGER, note TEXT);
WITH RECURSIVE o(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM o
                        WHERE x < (SELECT max(500, CAST(200000 * scale AS INTEGER)) FROM knob))
INSERT INTO orders
SELECT x,
       1 + (x * 48271) % (SELECT count(*) FROM customers),
       (x * 69621) % 10007,
       (x * 31) % 365,
       printf('note %d %s %s', x % 1000, hex((x * 2654435761) % 1000003),
              substr('lorem ipsum dolor sit amet consectetur adipiscing elit', 1 + x % 40, 5 + x % 17))
FROM o;

CREATE INDEX orders_customer ON orders(customer);
CREATE INDEX orders_day ON orders(day, amount);
CREATE INDEX customers_region ON customers(region, name);

SELECT region, count(*), sum(amount), round(avg(amount), 3)
FROM orders JOIN customers ON customers.id = orders.customer
GROUP BY region ORDER BY region;

SELECT day, count(*), max(amount) FROM orders GROUP BY day ORDER BY 3 DESC, 1 LIMIT 20;

SELECT c.name, t.total, t.n
FROM (SELECT customer, sum(amount) AS total, count(*) AS n FROM orders GROUP BY customer) t
JOIN customers c ON c.id = t.customer
ORDER BY t.total DESC, c.id LIMIT 20;

SELECT region, day, total, rank FROM (
  SELECT c.region, o.day, sum(o.amount) AS total,
         rank() OVER (PARTITION BY c.region ORDER BY sum(o.amount) DESC, o.day) AS rank
  FROM orders o JOIN customers c ON c.id = o.customer
  GROUP BY c.region, o.day)
WHERE rank <= 2 ORDER BY region, rank;

UPDATE orders SET note = note || ' updated ' || upper(substr(note, 6, 8)) WHERE day % 7 = 0;
DELETE FROM orders WHERE amount < 1500;
SELECT count(*), sum(length(note)), sum(amount) FROM orders;

SELECT region, count(*), length(group_concat(name || ':' || email, ','))
FROM customers GROUP BY region ORDER BY region LIMIT 15;

SELECT substr(note, 1, 8) AS k, count(*), sum(amount) FROM orders GROUP BY k ORDER BY 2 DESC, 1 LIMIT 10;

CREATE TABLE pairs AS
SELECT a.customer AS c1, b.customer AS c2, count(*) AS shared_days
FROM (SELECT DISTINCT customer, day FROM orders WHERE customer % 50 = 0) a
JOIN (SELECT DISTINCT customer, day FROM orders WHERE customer % 50 = 25) b ON a.day = b.day
GROUP BY a.customer, b.customer;
SELECT count(*), sum(shared_days), max(shared_days) FROM pairs;

DROP INDEX orders_day;
DELETE FROM orders WHERE id % 3 = 0;
VACUUM;
SELECT count(*), sum(amount), total_changes() > 0 FROM orders;
