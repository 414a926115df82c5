<?php
// A queue worker as Laravel's: Supervisor starts it in `current`, it loads the release's code
// once and runs until told to restart — `php artisan queue:restart` changes a value in the
// cache; here the file shared/queue-restart — then exits, and Supervisor starts it again in
// whatever `current` is then. Each turn it notes which release's code it runs.
$release = require __DIR__ . '/src/a.php';
$shared = dirname(__DIR__, 2) . '/shared';
$signal = function () use ($shared) {
    clearstatcache();
    return @file_get_contents($shared . '/queue-restart');
};
$last = $signal();
while (true) {
    file_put_contents($shared . '/worker.tmp', $release . ' ' . getmypid() . "\n");
    rename($shared . '/worker.tmp', $shared . '/worker.txt');
    if ($signal() !== $last) {
        exit(0);
    }
    usleep(100000);
}
