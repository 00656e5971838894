// sluice: the gateway binary. `serve` (default), `check-config`, `healthcheck`, `keys new|hash`, `simulate`.
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdlib>
#include <iostream>

#include "config.hpp"
#include "observe/logging.hpp"
#include "policy/keyring.hpp"
#include "server/gateway.hpp"
#include "simulator/simulator.hpp"

namespace {

std::string default_config_path() {
  if (const char* env = std::getenv("SLUICE_CONFIG")) return env;
  return "config/sluice.yaml";
}

// Loads and validates a config, printing every problem with its path; nullopt on errors.
std::optional<sluice::Config> load_or_report(const std::string& path, bool verbose) {
  auto r = sluice::load_config_file(path);
  for (const auto& e : r.errors) std::cerr << path << ": error: " << e.to_string() << "\n";
  for (const auto& w : r.warnings) std::cerr << path << ": warning: " << w.to_string() << "\n";
  if (!r.config) return std::nullopt;
  if (verbose)
    std::cout << path << ": ok (" << r.config->backends.size() << " backends, " << r.config->models.size()
              << " models, " << r.config->keys.size() << " keys)\n";
  return std::move(r.config);
}

int serve(const std::string& path) {
  auto cfg = load_or_report(path, false);
  if (!cfg) return 1;
  sluice::observe::setup_logging(cfg->log);
  try {
    sluice::server::Gateway gw(std::move(*cfg));
    gw.reload_from(path);
    gw.drain_on_signals();
    gw.start();
    gw.wait();
  } catch (const std::exception& e) {
    std::cerr << "sluice: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

// GET /healthz on the admin listener of the config (as the environment overrides it): exit 0 on a 200. For
// container health checks, so the image needs no curl.
int healthcheck(const std::string& path) {
  auto cfg = load_or_report(path, false);
  if (!cfg) return 1;
  auto host = cfg->server.admin_listen.host;
  if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{}, *found = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  auto port = std::to_string(cfg->server.admin_listen.port);
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || !found) {
    std::cerr << "sluice healthcheck: cannot resolve " << host << "\n";
    return 1;
  }
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  bool connected = fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0;
  ::freeaddrinfo(found);
  std::string reply;
  if (connected) {
    std::string req = "GET /healthz HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[512];
      ssize_t n;
      while (reply.size() < 4096 && (n = ::recv(fd, buf, sizeof buf, 0)) > 0) reply.append(buf, n);
    }
  }
  if (fd >= 0) ::close(fd);
  bool ok = reply.rfind("HTTP/1.1 200", 0) == 0 || reply.rfind("HTTP/1.0 200", 0) == 0;
  std::cout << (ok ? "healthy" : connected ? "unhealthy" : "unreachable") << " (admin " << host << ":" << port
            << ")\n";
  return ok ? 0 : 1;
}

int simulate(const std::string& listen, double tps, unsigned ttft_ms) {
  sluice::SimulatorConfig cfg;
  cfg.tokens_per_second = tps;
  cfg.ttft = std::chrono::milliseconds(ttft_ms);
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "sluice simulate: --listen must be HOST:PORT\n";
    return 1;
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  int port = std::atoi(listen.c_str() + colon + 1);
  try {
    boost::asio::io_context ctx{1};
    sluice::simulator::SimulatorServer sim(ctx, cfg);
    auto bound = sim.listen(host, static_cast<std::uint16_t>(port));
    std::cout << "sluice simulator listening on " << host << ":" << bound << std::endl;
    boost::asio::signal_set signals(ctx, SIGTERM, SIGINT);
    signals.async_wait([&](auto, int) { ctx.stop(); });
    ctx.run();
  } catch (const std::exception& e) {
    std::cerr << "sluice simulate: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sluice: an OpenAI-compatible gateway for large language models"};
  app.set_version_flag("--version", std::string("sluice ") + SLUICE_VERSION);
  std::string config = default_config_path();
  app.add_option("-c,--config", config, "config file (or SLUICE_CONFIG)");

  auto* serve_cmd = app.add_subcommand("serve", "run the gateway (the default)");
  serve_cmd->add_option("-c,--config", config, "config file (or SLUICE_CONFIG)");

  auto* check_cmd = app.add_subcommand("check-config", "validate a config file and exit");
  check_cmd->add_option("-c,--config", config, "config file (or SLUICE_CONFIG)");

  auto* health_cmd = app.add_subcommand("healthcheck", "GET /healthz on the config's admin listener (exit 0 when healthy)");
  health_cmd->add_option("-c,--config", config, "config file (or SLUICE_CONFIG)");

  auto* keys_cmd = app.add_subcommand("keys", "client keys");
  keys_cmd->require_subcommand(1);
  std::string key_name = "my-key";
  auto* keys_new = keys_cmd->add_subcommand("new", "print a fresh random key and its config line");
  keys_new->add_option("--name", key_name, "the key's name in config, metrics and logs");
  std::string key_text;
  auto* keys_hash =
      keys_cmd->add_subcommand("hash", "print the SHA-256 of a key (read from stdin if not given)");
  keys_hash->add_option("key", key_text, "the key");

  auto* sim_cmd = app.add_subcommand("simulate", "run the simulated OpenAI-compatible backend alone");
  std::string sim_listen = "127.0.0.1:8000";
  double sim_tps = 200;
  unsigned sim_ttft = 50;
  sim_cmd->add_option("--listen", sim_listen, "HOST:PORT to listen on");
  sim_cmd->add_option("--tokens-per-second", sim_tps, "decode speed")->check(CLI::PositiveNumber);
  sim_cmd->add_option("--ttft", sim_ttft, "time to first token in milliseconds");

  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);

  if (*check_cmd) return load_or_report(config, true) ? 0 : 1;
  if (*health_cmd) return healthcheck(config);
  if (*keys_new) {
    auto key = sluice::policy::generate_key();
    std::cout << "key:    " << key << "\n"
              << "config: - { name: " << key_name << ", key_sha256: \"" << sluice::policy::sha256_hex(key)
              << "\", models: [\"*\"] }\n"
              << "Give the key to its user; only the digest goes into the config.\n";
    return 0;
  }
  if (*keys_hash) {
    if (key_text.empty() && !std::getline(std::cin, key_text)) return 1;
    std::cout << sluice::policy::sha256_hex(key_text) << "\n";
    return 0;
  }
  if (*sim_cmd) return simulate(sim_listen, sim_tps, sim_ttft);
  return serve(config);
}
