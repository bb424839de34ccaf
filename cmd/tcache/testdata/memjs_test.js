// memjs (binary protocol) against a server: set/get, incr creating the
// counter with an initial value, touch, delete. Usage:
//   node memjs_test.js NODE_MODULES_DIR HOST:PORT
// Prints "N passed, M failed"; exits 1 on any failure.
const path = require('path');
const memjs = require(path.join(process.argv[2], 'memjs'));
const client = memjs.Client.create(process.argv[3], { retries: 0, timeout: 5, logger: { log() {} } });
let passed = 0, failed = 0;
function check(name, got, want) {
  if (JSON.stringify(got) === JSON.stringify(want)) { passed++; return; }
  failed++;
  console.log(`FAIL ${name}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}
(async () => {
  try {
    await client.flush();
    check('set', await client.set('k', 'hello', { expires: 0 }), true);
    const r = await client.get('k');
    check('get', r.value && r.value.toString(), 'hello');
    check('get miss', (await client.get('nope')).value, null);
    let inc = await client.increment('ctr', 5, { initial: 10 });
    check('incr creates with initial', [inc.success, inc.value], [true, 10]);
    inc = await client.increment('ctr', 5, { initial: 10 });
    check('incr', [inc.success, inc.value], [true, 15]);
    const dec = await client.decrement('ctr', 20, { initial: 0 });
    check('decr clamps', [dec.success, dec.value], [true, 0]);
    check('touch', await client.touch('k', 100), true);
    check('touch missing', await client.touch('nope', 100), false);
    check('add existing', await client.add('k', 'x').catch(() => false), false);
    check('replace', await client.replace('k', 'v2'), true);
    check('get replaced', (await client.get('k')).value.toString(), 'v2');
    check('delete', await client.delete('k'), true);
    check('delete missing', await client.delete('k'), false);
    check('get deleted', (await client.get('k')).value, null);
    const st = await new Promise((res) => client.stats((err, server, stats) => res(err ? {} : stats)));
    check('stats version', st.version, '1.6.18');
  } catch (e) {
    failed++;
    console.log('FAIL exception:', e && e.stack || e);
  }
  console.log(`${passed} passed, ${failed} failed`);
  client.close();
  process.exit(failed ? 1 : 0);
})();
