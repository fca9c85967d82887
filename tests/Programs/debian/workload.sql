-- sqlite3 workload: a recursive CTE fills a table, an index, aggregates.
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, val TEXT, x REAL);
WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 10000)
INSERT INTO t(grp, val, x) SELECT n % 17, printf('v%05d', (n * 7919) % 10007), n / 3.0 FROM c;
CREATE INDEX tg ON t(grp, val);
SELECT count(*), sum(grp), min(val), max(val), round(avg(x), 6) FROM t;
SELECT grp, count(*), min(val), round(sum(x), 3) FROM t GROUP BY grp ORDER BY grp;
SELECT val FROM t WHERE grp = 5 ORDER BY val LIMIT 5;
SELECT count(DISTINCT val), group_concat(id, ',') FROM (SELECT * FROM t WHERE val LIKE 'v0001%' ORDER BY id);
