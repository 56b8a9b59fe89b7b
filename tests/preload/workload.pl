# SPDX-License-Identifier: MIT
# A perl workload for the preload test: hashes, arrays, regular expressions, sorting, sprintf,
# closures, pack/unpack and references, with deterministic output (hash order never printed
# unsorted), so the run under LD_PRELOAD=libpyalloc.so must print what the run on glibc prints.
use strict;
use warnings;

my $seed = 42;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return int($seed / 65536); }

# words and counts
my %count;
my @words;
for my $i (1 .. 60000) {
    my $w = join '', map { chr(97 + rnd() % 7) } 1 .. (1 + rnd() % 4);
    $count{$w}++;
    push @words, $w if $i % 3 == 0;
}
my @top = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0 .. 9];
printf "distinct %d, top: %s\n", scalar(keys %count), join(' ', map { "$_=$count{$_}" } @top);

# regular expressions over a long text
my $text = join ' ', @words;
my @pairs = $text =~ /\b([a-c]{2})\s+([d-g]{3})\b/g;
(my $squeezed = $text) =~ s/(\w)\1+/$1/g;
my $n = () = $text =~ /\bab\w*/g;
printf "pairs %d, squeezed length %d, ab-words %d\n", scalar(@pairs) / 2, length($squeezed), $n;

# nested data: a tree of hashes and arrays, walked recursively
my %tree;
for my $i (1 .. 20000) {
    my ($a, $b, $c) = (rnd() % 17, rnd() % 13, rnd() % 11);
    push @{ $tree{"n$a"}{"m$b"}{"l$c"} }, $i;
}
sub walk {
    my ($node, $depth) = @_;
    return (1, scalar(@$node), 0 + eval { my $s = 0; $s += $_ for @$node; $s }) if ref $node eq 'ARRAY';
    my ($leaves, $items, $sum) = (0, 0, 0);
    for my $k (sort keys %$node) {
        my @r = walk($node->{$k}, $depth + 1);
        $leaves += $r[0]; $items += $r[1]; $sum += $r[2];
    }
    return ($leaves, $items, $sum);
}
printf "tree: leaves %d items %d sum %d\n", walk(\%tree, 0);

# closures and string building
my @adders = map { my $k = $_; sub { $_[0] * $k + length($_[1]) } } 1 .. 50;
my $acc = 0;
for my $i (0 .. 9999) { $acc = ($acc + $adders[$i % 50]->($i, $words[$i % @words])) % 1000000007; }
print "closures: $acc\n";

# pack/unpack and sprintf
my $blob = pack('N*', map { rnd() } 1 .. 5000);
my @back = unpack('N*', $blob);
my $x = 0; $x ^= $_ for @back;
printf "pack: %d bytes, xor %08x, %s\n", length($blob), $x, sprintf('%.3e|%-6s|%05d', 12345.678, 'ab', 42);

# sort numerically a large list, splice and join
my @nums = map { rnd() % 100000 } 1 .. 50000;
my @sorted = sort { $a <=> $b } @nums;
splice(@sorted, 100, 40000);
printf "sorted: first %d last %d count %d\n", $sorted[0], $sorted[-1], scalar(@sorted);
my %seen; my @uniq = grep { !$seen{$_}++ } @nums;
printf "unique: %d\n", scalar(@uniq);
