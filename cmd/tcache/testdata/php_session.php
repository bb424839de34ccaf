<?php
// One step of the PHP session tests, run with session.save_handler=memcached.
// Usage: php php_session.php MODE SID [VALUE]
//   write SID VALUE  start the session SID, store VALUE, write and close
//   read SID         start the session SID, print "value=<stored value>"
//   hold SID VALUE   start SID (taking its lock), print LOCKED, wait for a
//                    line on stdin, then store VALUE and close (releasing it)
//   strict SID       with use_strict_mode: offer SID, print "id=<id used>",
//                    then abort without writing
//   fresh            with use_strict_mode: start a new session, store
//                    "fresh", print "id=<id>"
[$mode, $sid, $value] = [$argv[1], $argv[2] ?? '', $argv[3] ?? ''];
ini_set('session.use_cookies', '0');
ini_set('session.use_only_cookies', '0');
ini_set('session.cache_limiter', '');
function start() {
    if (!session_start()) { fwrite(STDERR, "session_start failed\n"); exit(2); }
}
switch ($mode) {
case 'write':
    session_id($sid); start();
    $_SESSION['value'] = $value;
    session_write_close();
    echo "written\n";
    break;
case 'read':
    session_id($sid); start();
    echo 'value=', $_SESSION['value'] ?? '<none>', "\n";
    session_write_close();
    break;
case 'hold':
    session_id($sid); start();
    echo "LOCKED\n";
    fgets(STDIN);
    $_SESSION['value'] = $value;
    session_write_close();
    echo "RELEASED\n";
    break;
case 'strict':
    session_id($sid); start();
    echo 'id=', session_id(), "\n";
    session_abort();
    break;
case 'fresh':
    start();
    $_SESSION['value'] = 'fresh';
    echo 'id=', session_id(), "\n";
    session_write_close();
    break;
default:
    fwrite(STDERR, "unknown mode $mode\n"); exit(2);
}
