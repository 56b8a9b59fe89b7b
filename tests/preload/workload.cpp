// SPDX-License-Identifier: MIT
// A C++ unit for the clang preload case: templates, the standard containers and algorithms, virtual
// dispatch and exceptions, enough for clang's parser, semantic analysis and optimiser to allocate a
// lot. The program it builds prints deterministic results.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

struct Shape {
    virtual ~Shape() = default;
    virtual double area() const = 0;
};
struct Rect : Shape {
    double w, h;
    Rect(double w, double h) : w(w), h(h) {}
    double area() const override { return w * h; }
};
struct Circle : Shape {
    double r;
    explicit Circle(double r) : r(r) {}
    double area() const override { return 3.0 * r * r; }
};

template <typename K, typename V> std::map<V, std::vector<K>> invert(const std::unordered_map<K, V> &m)
{
    std::map<V, std::vector<K>> out;
    for (const auto &kv : m)
        out[kv.second].push_back(kv.first);
    for (auto &kv : out)
        std::sort(kv.second.begin(), kv.second.end());
    return out;
}

int main()
{
    unsigned seed = 42;
    auto rnd = [&seed] { return seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff; };
    std::vector<std::unique_ptr<Shape>> shapes;
    for (int i = 0; i < 20000; i++)
        if (rnd() % 2)
            shapes.push_back(std::make_unique<Rect>(rnd() % 10, rnd() % 10));
        else
            shapes.push_back(std::make_unique<Circle>(rnd() % 10));
    double total = std::accumulate(shapes.begin(), shapes.end(), 0.0,
                                   [](double s, const std::unique_ptr<Shape> &p) { return s + p->area(); });
    std::unordered_map<std::string, int> words;
    for (int i = 0; i < 50000; i++) {
        std::string w;
        for (unsigned j = 0; j < 1 + rnd() % 4; j++)
            w += static_cast<char>('a' + rnd() % 6);
        words[w]++;
    }
    auto inv = invert(words);
    std::ostringstream os;
    os << "shapes " << shapes.size() << " area " << total << " words " << words.size() << " counts " << inv.size()
       << " top " << inv.rbegin()->first << ":" << inv.rbegin()->second.front();
    int caught = 0;
    for (int i = 0; i < 1000; i++) {
        try {
            if (i % 7 == 0)
                throw std::runtime_error("seven " + std::to_string(i));
        } catch (const std::exception &e) {
            caught += e.what()[0] == 's';
        }
    }
    os << " caught " << caught;
    std::puts(os.str().c_str());
    return 0;
}
