# SPDX-License-Identifier: MIT
# A Ruby workload for the preload test: hashes, strings, symbols, regular expressions, Structs,
# sorting, JSON and Zlib, with garbage collection in between. The output never depends on hash seeds
# or time, so the run under LD_PRELOAD=libpyalloc.so must print what the run on glibc prints.
require 'json'
require 'zlib'
require 'digest'
seed = 42
rnd = lambda { seed = (seed * 1103515245 + 12345) % 2147483648; seed / 65536 }
count = Hash.new(0)
40000.times do
  w = (1 + rnd.call % 5).times.map { (97 + rnd.call % 8).chr }.join
  count[w] += 1
end
keys = count.keys.sort
puts "distinct #{keys.size} first #{keys.first} last #{keys.last}"
Point = Struct.new(:x, :y)
pts = 20000.times.map { Point.new(rnd.call % 1000, rnd.call % 1000) }
puts "points #{pts.sort_by { |p| [p.x, p.y] }.first(3).map(&:to_a).inspect}"
GC.start
json = JSON.generate(keys.first(3000).to_h { |k| [k, { 'n' => count[k], 'r' => k.reverse }] })
puts "json #{json.size} md5 #{Digest::MD5.hexdigest(json)}"
puts "zlib #{Zlib::Deflate.deflate(json, 9).size} crc #{Zlib.crc32(json)}"
m = keys.join(' ').scan(/\b[a-c]{3,}\b/)
puts "regex #{m.size} #{m.first(3).join(',')}"
syms = keys.first(5000).map(&:to_sym)
puts "symbols #{syms.uniq.size}"
tree = ->(d) { d.zero? ? nil : [tree.call(d - 1), d, tree.call(d - 1)] }
sum = ->(t) { t ? sum.call(t[0]) + t[1] + sum.call(t[2]) : 0 }
puts "trees #{10.times.sum { sum.call(tree.call(12)) }}"
