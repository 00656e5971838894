// HTTPS backends: a certificate made at test time, trusted through ca_file; untrusted ones are refused.
#include <gtest/gtest.h>
#include <poll.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace sluice::test {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

struct Cert {
  std::string cert, key;
};

Cert make_cert(const TempDir& dir, const std::string& name, const std::string& san) {
  Cert c{dir.path() + "/" + name + ".pem", dir.path() + "/" + name + ".key"};
  auto [code, out] = run_command({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                  "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", c.key, "-out", c.cert,
                                  "-days", "2", "-subj", "/CN=" + name, "-addext", "subjectAltName=" + san});
  if (code != 0) throw std::runtime_error("openssl failed: " + out);
  return c;
}

/// A TLS backend (blocking, one thread) answering chat completions with a fixed JSON body.
class TlsUpstream {
 public:
  explicit TlsUpstream(const Cert& cert) : tls_(ssl::context::tls_server), acceptor_(ctx_) {
    tls_.use_certificate_chain_file(cert.cert);
    tls_.use_private_key_file(cert.key, ssl::context::pem);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { serve(); });
  }
  ~TlsUpstream() {
    stop_ = true;
    thread_.join();
  }
  std::uint16_t port() const { return port_; }
  int handshakes_failed() const { return failed_.load(); }
  std::string last_target() {
    std::lock_guard l(m_);
    return target_;
  }
  std::string last_sni() {
    std::lock_guard l(m_);
    return sni_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{acceptor_.native_handle(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      tcp::socket sock(ctx_);
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      if (ec) continue;
      ssl::stream<tcp::socket> s(std::move(sock), tls_);
      s.handshake(ssl::stream_base::server, ec);
      if (ec) {
        ++failed_;
        continue;
      }
      if (const char* name = SSL_get_servername(s.native_handle(), TLSEXT_NAMETYPE_host_name)) {
        std::lock_guard l(m_);
        sni_ = name;
      }
      boost::beast::flat_buffer buf;
      http::request<http::string_body> req;
      http::read(s, buf, req, ec);
      if (ec) continue;
      {
        std::lock_guard l(m_);
        target_ = std::string(req.target());
      }
      if (chunked_) {
        write_chunked(s, req.body().find("\"stream\":true") != std::string::npos);
        s.shutdown(ec);
        continue;
      }
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      res.body() =
          R"({"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"secure"}}]})";
      res.keep_alive(false);
      res.prepare_payload();
      http::write(s, res, ec);
      s.shutdown(ec);
    }
  }

  // A chunked answer, each chunk in its own TLS record a moment after the last: an SSE stream, or a whole
  // JSON answer in pieces.
  static void write_chunked(ssl::stream<tcp::socket>& s, bool sse) {
    std::vector<std::string> parts;
    if (sse) {
      for (const char* piece : {"se", "cu", "re"})
        parts.push_back(std::string(R"(data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,)") +
                        R"("delta":{"content":")" + piece + R"("},"finish_reason":null}]})" + "\n\n");
      parts.push_back(
          "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
          "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3,\"total_tokens\":7}}\n\n");
      parts.push_back("data: [DONE]\n\n");
    } else {
      parts = {R"({"object":"chat.completion","choices":[{"index":0,)", R"("message":{"role":"assistant",)",
               R"("content":"secure"}}],"usage":{"prompt_tokens":4,"completion_tokens":3}})"};
    }
    boost::system::error_code ec;
    asio::write(s,
                asio::buffer(std::string("HTTP/1.1 200 OK\r\nContent-Type: ") +
                             (sse ? "text/event-stream" : "application/json") +
                             "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"),
                ec);
    for (const auto& part : parts) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      char size[16];
      std::snprintf(size, sizeof size, "%zx\r\n", part.size());
      asio::write(s, asio::buffer(std::string(size) + part + "\r\n"), ec);
    }
    asio::write(s, asio::buffer(std::string("0\r\n\r\n")), ec);
  }

 public:
  bool chunked_ = false;  // set before the first request

 private:
  asio::io_context ctx_;
  ssl::context tls_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> failed_{0};
  std::mutex m_;
  std::string target_, sni_;
  std::thread thread_;
};

std::string tls_config(std::uint16_t port, const std::string& host, const std::string& ca_file) {
  return test_config_yaml("backends:\n  - { name: secure, dialect: qubrid, url: \"https://" + host + ":" +
                          std::to_string(port) +
                          "/api/v1/qubridai\", api_key: k, health: { enabled: false }" +
                          (ca_file.empty() ? "" : ", ca_file: \"" + ca_file + "\"") +
                          " }\nmodels:\n  - { name: m, targets: [ { backend: secure } ] }\n");
}

const std::string kChat = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";

TEST(Tls, TrustedBackendWithPathPrefixAndSni) {
  TempDir dir;
  auto cert = make_cert(dir, "localhost", "DNS:localhost,IP:127.0.0.1");
  TlsUpstream upstream(cert);
  TestGateway gw(tls_config(upstream.port(), "localhost", cert.cert));
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("secure"), std::string::npos);
  EXPECT_EQ(upstream.last_target(), "/api/v1/qubridai/chat/completions");
  EXPECT_EQ(upstream.last_sni(), "localhost");
}

// A backend's chunked answers over TLS: a stream relayed event by event, and a whole answer decoded from its
// chunks, each chunk arriving in a TLS record of its own.
TEST(Tls, ChunkedAnswersAndStreamsFromATlsBackend) {
  TempDir dir;
  auto cert = make_cert(dir, "localhost", "DNS:localhost,IP:127.0.0.1");
  TlsUpstream upstream(cert);
  upstream.chunked_ = true;
  TestGateway gw(tls_config(upstream.port(), "localhost", cert.cert));
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"content\":\"secure\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"completion_tokens\":3"), std::string::npos) << r.body;

  auto s = post_json(gw.port(), "/v1/chat/completions",
                     R"({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]})");
  ASSERT_EQ(s.status, 200) << s.body;
  const auto events = sse_data(s.body);
  std::string text;
  for (const auto& e : events)
    if (auto at = e.find(R"("content":")"); at != std::string::npos)
      text += e.substr(at + 11, e.find('"', at + 11) - (at + 11));
  EXPECT_EQ(text, "secure") << s.body;
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]") << s.body;
  EXPECT_TRUE(wait_until([&] {
    return metric_value(gw.admin_port(),
                        R"(sluice_tokens_total{backend="secure",key="tester",model="m",type="output"})") == 6;
  })) << HttpClient(gw.admin_port()).request("GET", "/metrics").body;
}

TEST(Tls, UntrustedCertificateIsRefused) {
  TempDir dir;
  auto cert = make_cert(dir, "localhost", "DNS:localhost,IP:127.0.0.1");
  TlsUpstream upstream(cert);
  TestGateway gw(tls_config(upstream.port(), "127.0.0.1", ""));  // system CAs only: self-signed is untrusted
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_NE(r.body.find("upstream_unreachable"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("127.0.0.1"), std::string::npos) << r.body;  // no internal addresses to clients
  EXPECT_NE(HttpClient(gw.admin_port())
                .request("GET", "/metrics")
                .body.find("sluice_upstream_errors_total{backend=\"secure\",reason=\"tls\"} 1"),
            std::string::npos);
  EXPECT_TRUE(wait_until([&] { return upstream.handshakes_failed() >= 1; }));
}

TEST(Tls, CertificateForAnotherHostIsRefused) {
  TempDir dir;
  auto cert = make_cert(dir, "elsewhere.example", "DNS:elsewhere.example");
  TlsUpstream upstream(cert);
  TestGateway gw(tls_config(upstream.port(), "localhost", cert.cert));  // trusted, but not for this name
  auto r = post_json(gw.port(), "/v1/chat/completions", kChat);
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_NE(HttpClient(gw.admin_port())
                .request("GET", "/metrics")
                .body.find("sluice_upstream_errors_total{backend=\"secure\",reason=\"tls\"} 1"),
            std::string::npos);
}

}  // namespace
}  // namespace sluice::test
