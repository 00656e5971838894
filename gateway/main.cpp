// sluice: the gateway binary. `serve` (default), `check-config`, `keys new|hash`, `simulate`.
#include <spdlog/spdlog.h>

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
    gw.start();
    gw.drain_on_signals();
    gw.wait();
  } catch (const std::exception& e) {
    std::cerr << "sluice: " << e.what() << "\n";
    return 1;
  }
  return 0;
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
