<?php
// php-memcached's Memcached class over the binary protocol: every call and
// its expected result. Usage: php php_memcached_test.php HOST PORT
// Prints one line per failure and a summary "N passed, M failed"; exits 1
// on any failure.
[$host, $port] = [$argv[1], (int)$argv[2]];
$m = new Memcached();
$m->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
$m->setOption(Memcached::OPT_COMPRESSION, false); // append/prepend need it off
$m->addServer($host, $port);

$passed = 0; $failed = 0;
function check($name, $got, $want) {
    global $passed, $failed;
    if ($got === $want) { $passed++; return; }
    $failed++;
    echo "FAIL $name: got ", var_export($got, true), ", want ", var_export($want, true), "\n";
}
function code() { global $m; return $m->getResultCode(); }

check('flush', $m->flush(), true);
check('set', $m->set('k', 'v1'), true);
check('get', $m->get('k'), 'v1');
check('get miss', $m->get('nope'), false);
check('get miss code', code(), Memcached::RES_NOTFOUND);
check('set int', $m->set('i', 42), true);
check('get int (flags)', $m->get('i'), 42);
check('set array', $m->set('arr', ['a' => 1, 'b' => [2, 3]]), true);
check('get array', $m->get('arr'), ['a' => 1, 'b' => [2, 3]]);
check('add existing', $m->add('k', 'x'), false);
check('add existing code', code(), Memcached::RES_DATA_EXISTS);
check('add new', $m->add('k2', 'a'), true);
check('replace', $m->replace('k2', 'b'), true);
check('replace missing', $m->replace('missing', 'b'), false);
check('replace missing code', code(), Memcached::RES_NOTFOUND);
check('get replaced', $m->get('k2'), 'b');
check('append', $m->append('k2', '_end'), true);
check('prepend', $m->prepend('k2', 'start_'), true);
check('get appended', $m->get('k2'), 'start_b_end');
check('append missing', $m->append('missing', 'x'), false);
check('set counter', $m->set('n', '10'), true);
check('incr', $m->increment('n', 5), 15);
check('decr', $m->decrement('n', 3), 12);
check('decr below zero', $m->decrement('n', 100), 0);
check('incr missing', $m->increment('nc', 1), false);
check('incr missing code', code(), Memcached::RES_NOTFOUND);
check('incr with initial', $m->increment('nc', 1, 7), 7);
check('incr after initial', $m->increment('nc', 1, 7), 8);
check('decr with initial', $m->decrement('nd', 1, 3), 3);
check('incr non-numeric', $m->increment('k', 1), false);
$r = $m->get('k', null, Memcached::GET_EXTENDED);
check('get extended value', $r['value'] ?? null, 'v1');
$cas = $r['cas'] ?? 0;
check('cas nonzero', $cas > 0, true);
check('cas ok', $m->cas($cas, 'k', 'v2'), true);
check('cas stale', $m->cas($cas, 'k', 'v3'), false);
check('cas stale code', code(), Memcached::RES_DATA_EXISTS);
check('get after cas', $m->get('k'), 'v2');
check('cas missing', $m->cas(12345, 'missing', 'x'), false);
check('cas missing code', code(), Memcached::RES_NOTFOUND);
check('touch', $m->touch('k', 100), true);
check('touch missing', $m->touch('missing', 100), false);
check('get after touch', $m->get('k'), 'v2');
check('setMulti', $m->setMulti(['m1' => 'a', 'm2' => 'b', 'm3' => 'c']), true);
check('getMulti', $m->getMulti(['m1', 'nope', 'm3', 'm2']), ['m1' => 'a', 'm3' => 'c', 'm2' => 'b']);
check('delete', $m->delete('k'), true);
check('delete missing', $m->delete('k'), false);
check('delete missing code', code(), Memcached::RES_NOTFOUND);
check('get deleted', $m->get('k'), false);
check('deleteMulti', $m->deleteMulti(['m1', 'm2']), ['m1' => true, 'm2' => true]);
check('getMulti after deleteMulti', $m->getMulti(['m1', 'm2', 'm3']), ['m3' => 'c']);
$big = str_repeat('x', 2 << 20);
check('set too large', $m->set('big', $big), false);
check('set too large code', code(), Memcached::RES_E2BIG);
check('usable after too large', $m->get('m3'), 'c');
check('expired', $m->set('e', 'x', time() - 10) && $m->get('e') === false, true);
// An add with an absolute expiry in the past succeeds and leaves nothing.
check('add past expiry', $m->add('pastadd', 'x', time() - 10), true);
check('add past expiry leaves nothing', $m->get('pastadd'), false);
check('add after past expiry', $m->add('pastadd', 'y'), true);
$v = $m->getVersion();
check('version', is_array($v) && in_array('1.6.18', $v, true), true);
$s = $m->getStats();
check('stats', is_array($s) && isset(current($s)['curr_items']), true);
echo "$passed passed, $failed failed\n";
exit($failed ? 1 : 0);
