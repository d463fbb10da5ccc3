// tests/test_sampling.cpp - the generator's next-token choice (label: sampling).
#include "test_support.hpp"

#include <dsv4/model/sampling.hpp>

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
