# A deterministic Python workload for the VM: json, re, hashlib, struct, itertools and the sqlite3 module.
import hashlib, itertools, json, re, sqlite3, struct

doc = {"name": "revirt", "values": [i * i for i in range(50)], "nested": {"a": [1, 2, {"b": None}], "t": True}}
text = json.dumps(doc, sort_keys=True)
print(len(text), json.loads(text)["values"][7])
words = re.findall(r"[a-z]+\d*", "alpha1 beta22 gamma delta333 epsilon " * 20)
print(len(words), sorted(set(words)))
print(re.sub(r"(\d+)", lambda m: str(int(m.group(1)) * 2), "a1 b22 c333"))
for name in ("md5", "sha1", "sha256", "sha512", "blake2b"):
    print(name, hashlib.new(name, text.encode()).hexdigest())
packed = struct.pack("<iqdH", -7, 2**40 + 3, 3.141592653589793, 65535)
print(packed.hex(), struct.unpack("<iqdH", packed))
print(list(itertools.islice(itertools.permutations("abcd", 3), 5)), sum(1 for _ in itertools.combinations(range(20), 4)))
db = sqlite3.connect(":memory:")
db.execute("create table t (k integer primary key, v text, n real)")
db.executemany("insert into t (v, n) values (?, ?)", ((f"row{i}", i / 7) for i in range(2000)))
db.execute("create index tv on t (v)")
print(db.execute("select count(*), sum(n), min(v), max(v) from t where k % 3 = 0").fetchone())
print(db.execute("select v from t where v like 'row19%' order by v desc limit 3").fetchall())
print(f"{sum(x * x for x in range(100000)):,}", 2 ** 200 % 1000003, round(1 / 3, 12))
