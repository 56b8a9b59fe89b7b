// SPDX-License-Identifier: MIT
// unit.cpp: a large C++ translation unit for the compiler benchmark (bench/README.md, "gcc").
// It includes most of the standard library's headers and instantiates containers, algorithms,
// std::function, std::variant, std::optional and iostreams over several element types, made
// from one template parameterised by an integer, so that g++ builds hundreds of template
// instances, inlines and optimises them: the allocation pattern of compiling template-heavy code.
// It is compiled only (g++ -S), never run.
#include <algorithm>
#include <any>
#include <array>
#include <atomic>
#include <bitset>
#include <chrono>
#include <complex>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <stack>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace bench {

template <int N> struct Key {
    int id;
    std::string name;
    bool operator<(const Key &o) const { return std::tie(id, name) < std::tie(o.id, o.name); }
    bool operator==(const Key &o) const { return id == o.id && name == o.name; }
};

template <int N> struct KeyHash {
    std::size_t operator()(const Key<N> &k) const { return std::hash<std::string>()(k.name) ^ (std::size_t)k.id * N; }
};

template <int N> struct Record {
    Key<N> key;
    std::vector<double> values;
    std::map<std::string, int> tags;
    std::optional<std::string> note;
    std::variant<int, double, std::string> extra;
};

template <int N> class Table {
  public:
    void add(Record<N> r) {
        index_[r.key] = rows_.size();
        byname_.emplace(r.key.name, r.key.id);
        rows_.push_back(std::move(r));
    }
    std::optional<Record<N>> find(const Key<N> &k) const {
        auto it = index_.find(k);
        if (it == index_.end()) return std::nullopt;
        return rows_[it->second];
    }
    double total() const {
        return std::accumulate(rows_.begin(), rows_.end(), 0.0, [](double s, const Record<N> &r) {
            return s + std::accumulate(r.values.begin(), r.values.end(), 0.0);
        });
    }
    std::vector<Key<N>> sorted_keys() const {
        std::vector<Key<N>> keys;
        for (const auto &r : rows_) keys.push_back(r.key);
        std::sort(keys.begin(), keys.end());
        keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
        return keys;
    }
    std::string describe() const {
        std::ostringstream os;
        for (const auto &r : rows_) {
            os << std::setw(6) << r.key.id << ' ' << r.key.name;
            std::visit([&os](const auto &v) { os << " extra=" << v; }, r.extra);
            if (r.note) os << " note=" << *r.note;
            for (const auto &[t, c] : r.tags) os << ' ' << t << ':' << c;
            os << '\n';
        }
        return os.str();
    }
    template <class F> void each(F f) const { std::for_each(rows_.begin(), rows_.end(), f); }

  private:
    std::vector<Record<N>> rows_;
    std::unordered_map<Key<N>, std::size_t, KeyHash<N>> index_;
    std::multimap<std::string, int> byname_;
};

template <int N> struct Pipeline {
    std::deque<std::function<double(double)>> stages;
    std::list<std::pair<std::string, std::shared_ptr<Table<N>>>> sinks;
    std::priority_queue<std::pair<double, int>> queue;
    std::set<std::tuple<int, std::string, double>> seen;
    std::unordered_set<std::string> names;
    std::mutex lock;

    double run(double x) {
        std::lock_guard<std::mutex> g(lock);
        for (auto &s : stages) x = s(x);
        queue.emplace(x, N);
        seen.emplace(N, std::to_string(x), x);
        return x;
    }
    std::vector<std::string> matches(const std::string &text) const {
        std::vector<std::string> out;
        std::istringstream in(text);
        for (std::string w; in >> w;)
            if (w.size() > 1 && w.back() == char('0' + N % 10)) out.push_back(w);
        std::stable_sort(out.begin(), out.end());
        return out;
    }
};

template <int N> double exercise(std::mt19937 &rng) {
    Table<N> t;
    std::uniform_real_distribution<double> d(0.0, 1.0);
    for (int i = 0; i < 8; i++) {
        Record<N> r{{i, "k" + std::to_string(i * N)}, {d(rng), d(rng)}, {{"t", i}}, std::nullopt, i};
        if (i % 2) r.note = "odd";
        if (i % 3 == 0) r.extra = std::string("s") + std::to_string(i);
        t.add(std::move(r));
    }
    auto p = std::make_shared<Pipeline<N>>();
    p->stages.push_back([](double x) { return x * N + 1; });
    p->stages.push_back([](double x) { return std::sqrt(std::abs(x)); });
    p->sinks.emplace_back("table", std::make_shared<Table<N>>(t));
    std::complex<double> c(t.total(), N);
    std::bitset<64 + N> bits(static_cast<unsigned long long>(N) * 2654435761u);
    std::any a = t.sorted_keys().size();
    double v = p->run(std::abs(c)) + bits.count() + std::any_cast<std::size_t>(a);
    v += p->matches(t.describe()).size();
    if (auto r = t.find({N % 8, "k0"})) v += r->values.size();
    return v;
}

template <int... Ns> double exercise_all(std::mt19937 &rng, std::integer_sequence<int, Ns...>) {
    return (exercise<Ns>(rng) + ...);
}

} // namespace bench

double bench_unit(unsigned seed) {
    std::mt19937 rng(seed);
    return bench::exercise_all(rng, std::make_integer_sequence<int, 3>());
}
