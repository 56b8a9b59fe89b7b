-- SPDX-License-Identifier: MIT
-- A Lua workload for the preload test: tables, strings, string patterns, closures, coroutines, sorting
-- and garbage collection (Lua allocates everything through realloc/free). The output never depends on
-- the order of pairs(), so the run under LD_PRELOAD=libpyalloc.so must print what the run on glibc
-- prints.
local seed = 42
local function rnd()
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed // 65536
end

-- words and counts
local count, words = {}, {}
for i = 1, 60000 do
  local t = {}
  for j = 1, 1 + rnd() % 4 do t[j] = string.char(97 + rnd() % 7) end
  local w = table.concat(t)
  count[w] = (count[w] or 0) + 1
  if i % 3 == 0 then words[#words + 1] = w end
end
local keys = {}
for k in pairs(count) do keys[#keys + 1] = k end
table.sort(keys, function(a, b) if count[a] ~= count[b] then return count[a] > count[b] end return a < b end)
local top = {}
for i = 1, 10 do top[i] = keys[i] .. "=" .. count[keys[i]] end
print(string.format("distinct %d, top: %s", #keys, table.concat(top, " ")))

-- string patterns over a long text
local text = table.concat(words, " ")
local pairs_found = 0
for _ in text:gmatch("%f[%a]([a-c][a-c]) ([d-g][d-g][d-g])%f[%A]") do pairs_found = pairs_found + 1 end
local squeezed = text:gsub("(%a)%1+", "%1")
print(string.format("pairs %d, squeezed length %d, upper %s", pairs_found, #squeezed, text:sub(1, 20):upper()))

-- nested tables, walked recursively in sorted order
local tree = {}
for i = 1, 20000 do
  local a, b, c = "n" .. rnd() % 17, "m" .. rnd() % 13, "l" .. rnd() % 11
  tree[a] = tree[a] or {}
  tree[a][b] = tree[a][b] or {}
  tree[a][b][c] = tree[a][b][c] or {}
  local l = tree[a][b][c]
  l[#l + 1] = i
end
local function walk(node)
  if node[1] ~= nil then
    local s = 0
    for _, v in ipairs(node) do s = s + v end
    return 1, #node, s
  end
  local ks = {}
  for k in pairs(node) do ks[#ks + 1] = k end
  table.sort(ks)
  local leaves, items, sum = 0, 0, 0
  for _, k in ipairs(ks) do
    local l, it, s = walk(node[k])
    leaves, items, sum = leaves + l, items + it, sum + s
  end
  return leaves, items, sum
end
print(string.format("tree: leaves %d items %d sum %d", walk(tree)))

-- closures and coroutines
local adders = {}
for k = 1, 50 do adders[k] = function(x, w) return x * k + #w end end
local acc = 0
for i = 0, 9999 do acc = (acc + adders[i % 50 + 1](i, words[i % #words + 1])) % 1000000007 end
print("closures: " .. acc)
local gen = coroutine.wrap(function()
  for i = 1, 20000 do coroutine.yield(string.rep("x", i % 37) .. i) end
end)
local total = 0
for _ = 1, 20000 do total = total + #gen() end
print("coroutine: " .. total)

-- sort a large array, churn the heap, collect
local nums = {}
for i = 1, 50000 do nums[i] = rnd() % 100000 end
table.sort(nums)
local junk = {}
for r = 1, 5 do
  for i = 1, 20000 do junk[i] = { i, tostring(i * r), { r } } end
  junk = {}
  collectgarbage("collect")
end
local uniq, seen = 0, {}
for _, v in ipairs(nums) do if not seen[v] then seen[v] = true; uniq = uniq + 1 end end
print(string.format("sorted: first %d last %d unique %d", nums[1], nums[#nums], uniq))
