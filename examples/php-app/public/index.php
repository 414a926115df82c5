<?php
// The front controller: three files of the release, each contributing its release id, with a
// pause between them so that a request spans some time, as a real one does.
$ids = [];
foreach (['a', 'b', 'c'] as $part) {
    $ids[] = require __DIR__ . '/../src/' . $part . '.php';
    usleep(1000);
}
header('Content-Type: text/plain');
echo 'release ' . implode(' ', $ids) . "\n";
