// tests/test_sampling.cpp - the generator's next-token choice (label: sampling).
#include "test_support.hpp"

#include <dsv4/model/sampling.hpp>
#include <dsv4/model/speculative.hpp>

#include <limits>

using namespace dsv4_test;

TEST_CASE("sampling: greedy is argmax with the lowest id on ties") {
    std::vector<float> l = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f};
    dsv4::sampler s(l.size(), {});
    CHECK(s.pick(l.data(), l.size()) == 1);
    l[4] = std::numeric_limits<float>::infinity();
    CHECK(s.pick(l.data(), l.size()) == 4);
}

TEST_CASE("sampling: NaN logits and bad parameters are errors") {
    std::vector<float> l = {0.0f, std::numeric_limits<float>::quiet_NaN()};
    dsv4::sampler s(2, {});
    CHECK_THROWS_AS(s.pick(l.data(), 2), dsv4::error);
    CHECK_THROWS_AS(dsv4::sampler(2, {-1.0f, 1.0f, 0}), dsv4::error);
    CHECK_THROWS_AS(dsv4::sampler(2, {1.0f, 0.0f, 0}), dsv4::error);
    CHECK_THROWS_AS(dsv4::sampler(2, {1.0f, 1.5f, 0}), dsv4::error);
}

TEST_CASE("sampling: frequencies follow softmax(logits / T); the seed fixes the stream") {
    const std::vector<float> l = {1.0f, 2.0f, 0.0f, 1.5f};
    const float t = 0.7f;
    double z = 0;
    std::vector<double> p(l.size());
    for (size_t i = 0; i < l.size(); ++i) z += p[i] = std::exp(l[i] / t);
    dsv4::sampler s(l.size(), {t, 1.0f, 42});
    std::vector<int> count(l.size());
    const int n = 40000;
    std::vector<int32_t> first;
    for (int i = 0; i < n; ++i) {
        const int32_t k = s.pick(l.data(), l.size());
        if (i < 20) first.push_back(k);
        ++count[size_t(k)];
    }
    for (size_t i = 0; i < l.size(); ++i) {
        const double want = p[i] / z, got = double(count[i]) / n;
        CAPTURE(i);
        CHECK(std::fabs(got - want) < 5 * std::sqrt(want * (1 - want) / n));  // 5 sigma
    }
    dsv4::sampler again(l.size(), {t, 1.0f, 42});
    for (int32_t k : first) CHECK(again.pick(l.data(), l.size()) == k);
}

TEST_CASE("sampling: top_p keeps the smallest most-likely set reaching p") {
    // probabilities ~ 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps ids 3 and 0 only
    const std::vector<float> l = {1.0f, -2.0f, -1.0f, 2.0f};
    dsv4::sampler s(l.size(), {1.0f, 0.8f, 7});
    std::vector<int> count(l.size());
    for (int i = 0; i < 5000; ++i) ++count[size_t(s.pick(l.data(), l.size()))];
    CHECK(count[1] == 0);
    CHECK(count[2] == 0);
    CHECK(count[0] > 0);
    CHECK(count[3] > count[0]);
}

TEST_CASE("sampling: distribution() is what pick() draws from; draw() follows a given distribution") {
    const std::vector<float> l = {1.0f, -2.0f, -1.0f, 2.0f};
    dsv4::sampler greedy(l.size(), {});
    std::vector<double> p(l.size());
    greedy.distribution(l.data(), l.size(), p.data());
    CHECK(p == std::vector<double>{0, 0, 0, 1});
    dsv4::sampler nucleus(l.size(), {1.0f, 0.8f, 7});
    nucleus.distribution(l.data(), l.size(), p.data());
    const double e0 = std::exp(1.0), e3 = std::exp(2.0);
    CHECK(p[0] == doctest::Approx(e0 / (e0 + e3)));
    CHECK(p[3] == doctest::Approx(e3 / (e0 + e3)));
    CHECK(p[1] == 0.0);
    CHECK(p[2] == 0.0);
    std::vector<int> count(4);
    const int n = 20000;
    for (int i = 0; i < n; ++i) ++count[size_t(nucleus.draw(p.data(), p.size()))];
    CHECK(count[1] + count[2] == 0);
    CHECK(std::fabs(double(count[3]) / n - p[3]) < 5 * std::sqrt(p[3] * (1 - p[3]) / n));
    const std::vector<double> zero(4, 0.0);
    CHECK_THROWS_AS(nucleus.draw(zero.data(), 4), dsv4::error);
}

TEST_CASE("speculative sampling: the emitted token is distributed as the target (chi-square)") {
    // Draft d ~ q, then accept_draft against p: over many trials the emitted tokens must follow
    // p whatever q is (including q putting mass where p has none and the reverse), and the
    // acceptance rate must be sum_i min(p_i, q_i). Fixed seeds: the test is deterministic; the
    // chi-square bound is the 99.99 % quantile for 7 degrees of freedom.
    const std::size_t V = 8;
    const std::vector<std::vector<double>> ps = {
        {0.30, 0.20, 0.15, 0.10, 0.10, 0.05, 0.05, 0.05},
        {0.00, 0.50, 0.00, 0.25, 0.25, 0.00, 0.00, 0.00},
        {0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125},
    };
    const std::vector<std::vector<double>> qs = {
        {0.05, 0.05, 0.05, 0.10, 0.10, 0.15, 0.20, 0.30},
        {0.40, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.00},
        {0.30, 0.20, 0.15, 0.10, 0.10, 0.05, 0.05, 0.05},
    };
    const int n = 200000;
    std::vector<double> scratch(V);
    for (std::size_t c = 0; c < ps.size(); ++c) {
        const auto& p = ps[c];
        const auto& q = qs[c];
        CAPTURE(c);
        dsv4::sampler s(V, {1.0f, 1.0f, 1000 + c});
        std::vector<double> count(V);
        int accepted = 0;
        for (int i = 0; i < n; ++i) {
            const int32_t d = s.draw(q.data(), V);
            const dsv4::draft_verdict v = dsv4::accept_draft(s, p.data(), q.data(), d, V, scratch.data());
            accepted += v.accepted;
            if (v.accepted) REQUIRE(v.token == d);
            count[std::size_t(v.token)] += 1;
        }
        double chi2 = 0;
        std::size_t dof = 0;
        for (std::size_t i = 0; i < V; ++i) {
            if (p[i] == 0) {
                CHECK(count[i] == 0);
                continue;
            }
            const double e = n * p[i];
            chi2 += (count[i] - e) * (count[i] - e) / e;
            ++dof;
        }
        double overlap = 0;
        for (std::size_t i = 0; i < V; ++i) overlap += std::min(p[i], q[i]);
        const double rate = double(accepted) / n;
        MESSAGE("case " << c << ": chi2 " << chi2 << " (" << dof - 1 << " dof), acceptance " << rate << " (expected "
                        << overlap << ")");
        CHECK(chi2 < (dof == 8 ? 29.9 : 21.1));  // 99.99 % quantiles for 7 and 2 dof
        CHECK(std::fabs(rate - overlap) < 5 * std::sqrt(overlap * (1 - overlap) / n) + 1e-12);
    }
}
