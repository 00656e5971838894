#include "upstream/url.hpp"

#include <gtest/gtest.h>

namespace sluice::upstream {
namespace {

TEST(ParseBaseUrlTest, HttpWithPortAndPrefix) {
  auto u = parse_base_url("http://127.0.0.1:8000/v1");
  ASSERT_TRUE(u.has_value());
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8000);
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->target("chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(u->host_header(), "127.0.0.1:8000");
}

TEST(ParseBaseUrlTest, HttpsDefaultsToPort443) {
  auto u = parse_base_url("https://api.openai.com/v1");
  ASSERT_TRUE(u.has_value());
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "api.openai.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->host_header(), "api.openai.com");
}

TEST(ParseBaseUrlTest, HttpDefaultsToPort80) {
  auto u = parse_base_url("http://vllm.internal");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->path, "");
  EXPECT_EQ(u->host_header(), "vllm.internal");
  EXPECT_EQ(u->target("embeddings"), "/embeddings");
}

TEST(ParseBaseUrlTest, QubridPrefix) {
  auto u = parse_base_url("https://platform.qubrid.com/api/v1/qubridai");
  ASSERT_TRUE(u.has_value());
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "platform.qubrid.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->path, "/api/v1/qubridai");
  EXPECT_EQ(u->target("chat/completions"), "/api/v1/qubridai/chat/completions");
}

TEST(ParseBaseUrlTest, TrailingSlashesAreRemoved) {
  auto u = parse_base_url("http://localhost:8080/v1/");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->target("completions"), "/v1/completions");
  auto root = parse_base_url("http://localhost:8080/");
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->path, "");
  EXPECT_EQ(root->target("completions"), "/completions");
  auto many = parse_base_url("http://localhost/v1//");
  ASSERT_TRUE(many.has_value());
  EXPECT_EQ(many->path, "/v1");
}

TEST(ParseBaseUrlTest, Ipv6Literal) {
  auto u = parse_base_url("http://[::1]:8000/v1");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 8000);
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->host_header(), "[::1]:8000");
  EXPECT_TRUE(u->host_is_ip());

  auto d = parse_base_url("https://[2001:db8::5]/v1");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->host, "2001:db8::5");
  EXPECT_EQ(d->port, 443);
  EXPECT_EQ(d->host_header(), "[2001:db8::5]");
}

TEST(ParseBaseUrlTest, InvalidUrls) {
  for (auto url : {"",
                   "ftp://example.com/v1",
                   "example.com/v1",
                   "HTTP//example.com",
                   "http://",
                   "http:///v1",
                   "http://:8000/v1",
                   "http://host:0/v1",
                   "http://host:99999/v1",
                   "http://host:65536",
                   "http://host:abc/v1",
                   "http://host:80x/v1",
                   "http://host:-1/v1",
                   "http://user:pass@host/v1",
                   "http://user@host:8000",
                   "http://host/v1?api-version=1",
                   "http://host/v1#frag",
                   "http://host/v 1",
                   "http://[::1/v1",
                   "http://[::1]x/v1",
                   "http://[]:80/v1"})
    EXPECT_EQ(parse_base_url(url), std::nullopt) << url;
}

TEST(ParseBaseUrlTest, QueryWithoutPathIsInvalid) {
  // A "?" or "#" right after the host is a query/fragment, never part of the host name.
  EXPECT_EQ(parse_base_url("http://host?x=1"), std::nullopt);
  EXPECT_EQ(parse_base_url("http://host:8000?x=1"), std::nullopt);
  EXPECT_EQ(parse_base_url("http://host#frag"), std::nullopt);
}

TEST(ParseBaseUrlTest, HighestPortIsAccepted) {
  auto u = parse_base_url("http://host:65535");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->port, 65535);
}

TEST(BaseUrlTest, HostHeaderOmitsOnlyTheSchemesDefaultPort) {
  EXPECT_EQ(parse_base_url("http://h:80/v1")->host_header(), "h");
  EXPECT_EQ(parse_base_url("https://h:443/v1")->host_header(), "h");
  EXPECT_EQ(parse_base_url("http://h:443/v1")->host_header(), "h:443");
  EXPECT_EQ(parse_base_url("https://h:80/v1")->host_header(), "h:80");
  EXPECT_EQ(parse_base_url("https://h:8443/v1")->host_header(), "h:8443");
}

TEST(BaseUrlTest, HostIsIp) {
  EXPECT_TRUE(parse_base_url("http://127.0.0.1:8000")->host_is_ip());
  EXPECT_TRUE(parse_base_url("http://10.1.2.3")->host_is_ip());
  EXPECT_TRUE(parse_base_url("http://[fe80::1]:8000")->host_is_ip());
  EXPECT_FALSE(parse_base_url("https://platform.qubrid.com/api")->host_is_ip());
  EXPECT_FALSE(parse_base_url("http://localhost:8000")->host_is_ip());
  EXPECT_FALSE(parse_base_url("http://1.2.3.4.example.com")->host_is_ip());
}

}  // namespace
}  // namespace sluice::upstream
