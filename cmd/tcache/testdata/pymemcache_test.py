#!/usr/bin/python3
"""pymemcache against a running memcached-compatible server.

Usage: /usr/bin/python3 pymemcache_test.py HOST PORT

Run by TestPymemcache (cmd/tcache/clients_test.go) against Debian's memcached
and against tcache, with the same expectations for both. It flushes the
server. Every check is counted; the last line of output is the summary:

    pymemcache X.Y.Z: N checks, M failed

and the exit status is 1 when any check failed (each failure is printed on
its own line before the summary), 2 on an unexpected exception.
"""

import sys
import time
import traceback

import pymemcache
from pymemcache.client.base import Client
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheIllegalInputError,
    MemcacheServerError,
)

checks = 0
failures = []


def check(name, got, want):
    global checks
    checks += 1
    if got != want:
        failures.append("%s: got %r, want %r" % (name, got, want))


def check_true(name, cond, detail=""):
    global checks
    checks += 1
    if not cond:
        failures.append("%s: failed %s" % (name, detail))


def raises(name, exc_type, fn, *args, **kwargs):
    """Checks that fn(*args, **kwargs) raises exc_type."""
    global checks
    checks += 1
    try:
        got = fn(*args, **kwargs)
    except exc_type:
        return
    except Exception as e:  # the wrong exception is a failure, not a crash
        failures.append("%s: raised %r, want %s" % (name, e, exc_type.__name__))
        return
    failures.append("%s: returned %r, want %s" % (name, got, exc_type.__name__))


def with_flags(key, value, flags):
    """Deserializer that keeps the client flags next to the value."""
    return (value, flags)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    server = (host, port)
    # default_noreply=False: storage commands wait for and report the reply;
    # the noreply variants below ask for noreply explicitly.
    c = Client(server, connect_timeout=5, timeout=10, default_noreply=False)
    fc = Client(server, connect_timeout=5, timeout=10, default_noreply=False,
                deserializer=with_flags)
    uc = Client(server, connect_timeout=5, timeout=10, default_noreply=False,
                allow_unicode_keys=True)

    check("flush_all", c.flush_all(), True)

    # version, stats
    v = c.version().decode()
    parts = v.split(".")
    check_true("version is X.Y.Z", len(parts) == 3 and all(p.isdigit() for p in parts)
               and int(parts[0]) >= 1, repr(v))
    st = c.stats()
    for k in (b"pid", b"uptime", b"time", b"curr_items", b"total_items", b"bytes",
              b"cmd_get", b"cmd_set", b"get_hits", b"get_misses", b"evictions",
              b"curr_connections", b"limit_maxbytes", b"threads"):
        check_true("stats has " + k.decode(), k in st)
    settings = c.stats("settings")
    check_true("stats settings has maxconns", b"maxconns" in settings)

    # set / get / flags
    check("set", c.set("k1", "v1"), True)
    check("get", c.get("k1"), b"v1")
    check("get missing", c.get("missing"), None)
    check("get missing default", c.get("missing", default=b"dflt"), b"dflt")
    check("set flags", fc.set("kf", b"fv", flags=0xDEADBEEF), True)
    check("get flags", fc.get("kf"), (b"fv", 0xDEADBEEF))
    check("set empty", c.set("empty", b""), True)
    check("get empty", c.get("empty"), b"")
    check("set overwrite", c.set("k1", "v1b"), True)
    check("get overwritten", c.get("k1"), b"v1b")
    binval = bytes(range(256)) + b"\r\nEND\r\n"
    check("set binary", c.set("bin", binval), True)
    check("get binary", c.get("bin"), binval)

    # get_many / set_many / gets_many / delete_many
    check("set_many", c.set_many({"m1": b"a", "m2": b"b", "m3": b"c"}), [])
    check("get_many", c.get_many(["m1", "m2", "nope", "m3"]),
          {"m1": b"a", "m2": b"b", "m3": b"c"})
    check("get_many empty", c.get_many([]), {})
    gm = c.gets_many(["m1", "m2"])
    check("gets_many keys", sorted(gm), ["m1", "m2"])
    check_true("gets_many cas", all(isinstance(cas, bytes) and cas.isdigit()
                                    for _, cas in gm.values()), repr(gm))
    check("delete_many", c.delete_many(["m1", "m2"]), True)
    check("get_many after delete_many", c.get_many(["m1", "m2", "m3"]), {"m3": b"c"})

    # add / replace
    check("add new", c.add("a1", b"x"), True)
    check("add existing", c.add("a1", b"y"), False)
    check("get after add", c.get("a1"), b"x")
    check("replace existing", c.replace("a1", b"z"), True)
    check("get after replace", c.get("a1"), b"z")
    check("replace missing", c.replace("r-missing", b"z"), False)
    check("get after replace missing", c.get("r-missing"), None)

    # append / prepend keep flags
    check("set for append", fc.set("ap", b"mid", flags=7), True)
    check("append", fc.append("ap", b"-end"), True)
    check("prepend", fc.prepend("ap", b"start-"), True)
    check("get after append/prepend", fc.get("ap"), (b"start-mid-end", 7))
    check("append missing", c.append("ap-missing", b"x"), False)
    check("prepend missing", c.prepend("ap-missing", b"x"), False)
    check("get after append missing", c.get("ap-missing"), None)

    # gets / cas
    check("set for cas", c.set("cas1", b"one"), True)
    val, cas = c.gets("cas1")
    check("gets value", val, b"one")
    check_true("gets cas is a number", isinstance(cas, bytes) and cas.isdigit(), repr(cas))
    check("gets missing", c.gets("cas-missing"), (None, None))
    check("cas ok", c.cas("cas1", b"two", cas), True)
    check("cas stale", c.cas("cas1", b"three", cas), False)
    check("get after cas", c.get("cas1"), b"two")
    check("cas missing", c.cas("cas-missing", b"x", b"1"), None)
    _, cas2 = c.gets("cas1")
    check_true("cas changed after store", cas2 != cas, "%r == %r" % (cas2, cas))
    c.set("cas1", b"other")
    check("cas after intervening set", c.cas("cas1", b"x", cas2), False)

    # incr / decr
    check("set counter", c.set("n", b"10"), True)
    check("incr", c.incr("n", 5), 15)
    check("decr", c.decr("n", 3), 12)
    check("decr clamps at 0", c.decr("n", 100), 0)
    check("set max", c.set("n", str(2**64 - 1)), True)
    check("incr wraps at 2^64", c.incr("n", 2), 1)
    check("incr missing", c.incr("n-missing", 1), None)
    check("decr missing", c.decr("n-missing", 1), None)
    c.set("notnum", b"abc")
    raises("incr non-numeric", MemcacheClientError, c.incr, "notnum", 1)
    check("get after incr non-numeric", c.get("notnum"), b"abc")
    check("set padded", c.set("pad", b"100"), True)
    check("decr shrinks digits", c.decr("pad", 91), 9)
    # memcached 1.6 pads a shrunken decr result with spaces in place
    # ("9  "); the client-visible number is what counts here.
    check("get after decr", c.get("pad").rstrip(b" "), b"9")

    # delete
    check("delete", c.delete("k1"), True)
    check("get after delete", c.get("k1"), None)
    check("delete missing", c.delete("k1"), False)

    # noreply variants: the client does not wait; a later get observes them.
    check("set noreply", c.set("nr", b"1", noreply=True), True)
    check("get after set noreply", c.get("nr"), b"1")
    c.add("nr", b"2", noreply=True)
    check("get after add noreply (existing)", c.get("nr"), b"1")
    c.add("nr2", b"2", noreply=True)
    check("get after add noreply (new)", c.get("nr2"), b"2")
    c.replace("nr", b"3", noreply=True)
    check("get after replace noreply", c.get("nr"), b"3")
    c.append("nr", b"4", noreply=True)
    c.prepend("nr", b"0", noreply=True)
    check("get after append/prepend noreply", c.get("nr"), b"034")
    _, ncas = c.gets("nr")
    c.cas("nr", b"5", ncas, noreply=True)
    check("get after cas noreply", c.get("nr"), b"5")
    c.incr("nr", 10, noreply=True)
    check("get after incr noreply", c.get("nr"), b"15")
    c.decr("nr", 5, noreply=True)
    check("get after decr noreply", c.get("nr"), b"10")
    c.touch("nr", 100, noreply=True)
    check("get after touch noreply", c.get("nr"), b"10")
    c.delete("nr", noreply=True)
    check("get after delete noreply", c.get("nr"), None)
    c.set_many({"nm1": b"a", "nm2": b"b"}, noreply=True)
    check("get_many after set_many noreply", c.get_many(["nm1", "nm2"]),
          {"nm1": b"a", "nm2": b"b"})

    # keys: unicode is sent as UTF-8 bytes; whitespace, NUL and > 250 bytes
    # are refused by the client before anything is sent.
    for key in ("ключ", "日本語キー", "emoji-\U0001F600", "ü" * 125):
        check("unicode set %r" % key, uc.set(key, key.encode("utf8")), True)
        check("unicode get %r" % key, uc.get(key), key.encode("utf8"))
    check("unicode get_many", uc.get_many(["ключ", "日本語キー"]),
          {"ключ": "ключ".encode("utf8"), "日本語キー": "日本語キー".encode("utf8")})
    check("250-byte key set", c.set("k" * 250, b"long"), True)
    check("250-byte key get", c.get("k" * 250), b"long")
    raises("251-byte key", MemcacheIllegalInputError, c.set, "k" * 251, b"x")
    raises("251-byte unicode key", MemcacheIllegalInputError, uc.set, "ü" * 126, b"x")
    raises("key with space", MemcacheIllegalInputError, c.set, "a b", b"x")
    raises("key with NUL", MemcacheIllegalInputError, c.set, "a\x00b", b"x")
    raises("non-ascii key without allow_unicode_keys", MemcacheIllegalInputError,
           c.set, "ключ", b"x")

    # large values: 500 KB round-trips; 2 MB is refused by the server
    # (default item size limit 1 MB) and the connection stays usable.
    big = bytes((i * 7 + 3) & 0xFF for i in range(500 * 1024))
    check("set 500KB", c.set("big", big), True)
    got = c.get("big")
    check_true("get 500KB", got == big, "len %s" % (None if got is None else len(got)))
    raises("set 2MB", MemcacheServerError, c.set, "huge", b"x" * (2 * 1024 * 1024))
    check("get after too large", c.get("huge"), None)
    check("connection usable after too large", c.get("k" * 250), b"long")

    # expiry and touch: exp1 expires; exp2 is touched to a long TTL and stays.
    check("set expire 1", c.set("exp1", b"e", expire=1), True)
    check("set expire 1 (to touch)", c.set("exp2", b"e", expire=1), True)
    check("set expire in the past (absolute)", c.set("exp3", b"e", expire=int(time.time()) - 10), True)
    check("get absolute past expiry", c.get("exp3"), None)
    check("set absolute future expiry", c.set("exp4", b"e", expire=int(time.time()) + 3600), True)
    check("touch", c.touch("exp2", 3600), True)
    check("touch missing", c.touch("exp-missing", 10), False)
    check("get before expiry", c.get("exp1"), b"e")
    time.sleep(2.2)
    check("get after expiry", c.get("exp1"), None)
    check("get touched after original expiry", c.get("exp2"), b"e")
    check("get absolute future expiry", c.get("exp4"), b"e")

    # flush_all, with and without noreply
    check("flush_all", c.flush_all(), True)
    check("get after flush_all", c.get_many(["exp2", "exp4", "big", "bin"]), {})
    c.set("f1", b"x")
    c.flush_all(noreply=True)
    check("get after flush_all noreply", c.get("f1"), None)
    # (curr_items is not checked after a flush: memcached drops flushed items
    # lazily and keeps counting them until they are touched.)

    # quit closes our side; the next command reconnects.
    c.quit()
    check("reconnect after quit", c.set("q", b"1"), True)
    c.flush_all()

    for client in (c, fc, uc):
        client.close()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        print("pymemcache %s: %d checks, aborted by an exception" % (pymemcache.__version__, checks))
        sys.exit(2)
    for f in failures:
        print("FAIL " + f)
    print("pymemcache %s: %d checks, %d failed" % (pymemcache.__version__, checks, len(failures)))
    sys.exit(1 if failures else 0)
