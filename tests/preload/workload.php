<?php
// SPDX-License-Identifier: MIT
// A PHP workload for the preload test, run with Debian's php-cli and its default configuration: the
// extensions php loads from conf.d (with dlopen(RTLD_DEEPBIND)) are used here, so their frees of the
// engine's blocks go through pyalloc's repair: tokenizer, ctype, iconv, calendar, fileinfo, Phar, PDO,
// posix (and the built-in json, pcre, spl, hash). The output never depends on hash seeds or time.
$seed = 42;
function rnd() { global $seed; $seed = ($seed * 1103515245 + 12345) % 2147483648; return intdiv($seed, 65536); }

$loaded = array_map('strtolower', get_loaded_extensions());
sort($loaded);
foreach (['tokenizer', 'ctype', 'iconv', 'calendar', 'fileinfo', 'phar', 'pdo', 'posix', 'json', 'pcre'] as $e)
    echo $e, ": ", in_array($e, $loaded) ? "loaded" : "MISSING", "\n";

// tokenizer: every token of a generated program (many small strings)
$src = "<?php\n";
for ($i = 0; $i < 3000; $i++) $src .= "\$v$i = " . rnd() % 1000 . " * (\$v" . max(0, $i - 1) . " + 'x$i');\n";
$kinds = [];
foreach (token_get_all($src) as $t) { $k = is_array($t) ? token_name($t[0]) : $t; $kinds[$k] = ($kinds[$k] ?? 0) + 1; }
ksort($kinds);
foreach ($kinds as $k => $n) echo "token $k $n\n";

// arrays, strings, json, pcre
$words = [];
for ($i = 0; $i < 50000; $i++) { $w = ''; for ($j = 0; $j < 1 + rnd() % 6; $j++) $w .= chr(97 + rnd() % 8); $words[$w] = ($words[$w] ?? 0) + 1; }
ksort($words);
echo "distinct words ", count($words), ", sum ", array_sum($words), "\n";
$json = json_encode(array_slice($words, 0, 2000));
$back = json_decode($json, true);
echo "json ", strlen($json), " bytes, ", count($back), " keys, md5 ", md5($json), "\n";
preg_match_all('/\b([a-d]{2,})\b/', implode(' ', array_keys($words)), $m);
echo "pcre matches ", count($m[1]), ", first ", $m[1][0], "\n";
$upper = array_filter(array_keys($words), 'ctype_lower');
echo "ctype_lower ", count($upper), "\n";
echo "iconv ", bin2hex(iconv('UTF-8', 'ISO-8859-1', "caf\u{e9} na\u{ef}ve")), "\n";
echo "calendar ", cal_days_in_month(CAL_GREGORIAN, 2, 2024), " ", jddayofweek(gregoriantojd(11, 26, 2026), 1), "\n";
$fi = new finfo(FILEINFO_MIME_TYPE);
echo "fileinfo ", $fi->buffer("GIF89a" . str_repeat("\0", 32)), " ", $fi->buffer("%PDF-1.4\n"), "\n";
echo "pdo drivers ", count(PDO::getAvailableDrivers()), "\n";
echo "phar ", Phar::running(false) === '' ? "not in a phar" : "in a phar", "\n";
echo "posix ", posix_getpid() === getmypid() ? "pid agrees" : "pid differs", "\n";
// objects and closures, freed and built again
class Node { public $l, $r, $v; function __construct($v, $d) { $this->v = $v; if ($d) { $this->l = new Node(2 * $v, $d - 1); $this->r = new Node(2 * $v + 1, $d - 1); } } }
function total($n) { return $n ? $n->v + total($n->l) + total($n->r) : 0; }
$s = 0;
for ($i = 0; $i < 20; $i++) { $t = new Node(1, 12); $s += total($t); unset($t); }
echo "trees $s\n";
$h = hash_init('sha256');
foreach ($words as $w => $n) hash_update($h, "$w=$n;");
echo "sha256 ", hash_final($h), "\n";
