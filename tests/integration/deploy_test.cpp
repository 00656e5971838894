// The deployment assets (docker/, deploy/kubernetes/, deploy/prometheus, deploy/grafana), checked for real without
// a container engine: every file parses; every shipped Sluice config loads as the container would load it; the
// Dockerfile builds with the make targets CI runs and ships the libraries the binary links; the manifests agree
// with the config (ports, probes, drain time) and with each other; and the binary, started the way the image's
// entrypoint starts it (non-root, config at the image's path by SLUICE_CONFIG, environment overrides), serves,
// answers its own health check, and drains a stream on SIGTERM.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "config.hpp"
#include "harness.hpp"

namespace sluice::test {
namespace {

namespace fs = std::filesystem;

std::string source(const std::string& rel) { return std::string(SLUICE_SOURCE_DIR) + "/" + rel; }

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string emit(const YAML::Node& n) {
  YAML::Emitter e;
  e << n;
  return e.c_str();
}

/// The environment a shipped config runs with, as a lookup (nothing from this machine's environment leaks in).
EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string issues(const LoadResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += "error: " + e.to_string() + "\n";
  for (const auto& w : r.warnings) out += "warning: " + w.to_string() + "\n";
  return out;
}

// ---- the Dockerfile, read as its instructions ----

struct Dockerfile {
  struct Stage {
    std::string from;
    std::vector<std::pair<std::string, std::string>> instructions;  // keyword, rest (continuations joined)
    std::vector<std::string> all(const std::string& keyword) const {
      std::vector<std::string> out;
      for (const auto& [k, v] : instructions)
        if (k == keyword) out.push_back(v);
      return out;
    }
  };
  std::vector<Stage> stages;
};

Dockerfile parse_dockerfile(const std::string& text) {
  Dockerfile d;
  std::istringstream in(text);
  std::string line, logical;
  auto flush = [&] {
    auto start = logical.find_first_not_of(" \t");
    if (start == std::string::npos) return;
    logical = logical.substr(start);
    auto space = logical.find_first_of(" \t");
    std::string keyword = logical.substr(0, space), rest = space == std::string::npos ? "" : logical.substr(space + 1);
    if (keyword == "FROM")
      d.stages.push_back({rest, {}});
    else if (!d.stages.empty())
      d.stages.back().instructions.emplace_back(keyword, rest);
    logical.clear();
  };
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t") != std::string::npos && line[line.find_first_not_of(" \t")] == '#') continue;
    if (!line.empty() && line.back() == '\\') {
      logical += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    logical += line;
    flush();
  }
  flush();
  return d;
}

std::vector<std::string> json_array(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  std::vector<std::string> out;
  if (!d.IsArray()) return out;
  for (const auto& v : d.GetArray())
    if (v.IsString()) out.push_back(v.GetString());
  return out;
}

// ENV lines in either form (KEY=VALUE pairs, or KEY VALUE).
std::map<std::string, std::string> env_of_stage(const Dockerfile::Stage& s) {
  std::map<std::string, std::string> env;
  for (const auto& line : s.all("ENV")) {
    std::istringstream words(line);
    std::string w;
    while (words >> w)
      if (auto eq = w.find('='); eq != std::string::npos) env[w.substr(0, eq)] = w.substr(eq + 1);
  }
  return env;
}

// The repository file the runtime stage copies to the image's config path.
std::string image_config_source(const Dockerfile::Stage& rt) {
  for (const auto& c : rt.all("COPY"))
    if (auto space = c.find(' '); space != std::string::npos && c.substr(space + 1) == "/etc/sluice/sluice.yaml")
      return c.substr(0, space);
  return "";
}

TEST(Deploy, EveryYamlAndJsonFileParses) {
  int files = 0;
  for (const char* dir : {"docker", "deploy", "config"})
    for (const auto& entry : fs::recursive_directory_iterator(source(dir))) {
      auto ext = entry.path().extension().string();
      if (ext == ".yaml" || ext == ".yml") {
        ++files;
        try {
          auto docs = YAML::LoadAllFromFile(entry.path().string());
          EXPECT_FALSE(docs.empty()) << entry.path();
        } catch (const YAML::Exception& e) {
          ADD_FAILURE() << entry.path() << ": " << e.what();
        }
      } else if (ext == ".json") {
        ++files;
        rapidjson::Document d;
        auto text = read(entry.path().string());
        d.Parse(text.data(), text.size());
        EXPECT_FALSE(d.HasParseError()) << entry.path();
      }
    }
  EXPECT_GE(files, 20);
}

TEST(Deploy, EveryShippedSluiceConfigLoadsAsItsDeploymentRunsIt) {
  const std::string digest(64, 'a');
  // Compose: the stack's environment (ports from the file, Redis by SLUICE_REDIS_URL, Qubrid off until keyed).
  auto compose = load_config_file(source("docker/sluice-compose.yaml"),
                                  env_of({{"SLUICE_REDIS_URL", "redis://redis:6379/0"}, {"SLUICE_LOG_LEVEL", "info"}}));
  ASSERT_TRUE(compose.config) << issues(compose);
  EXPECT_EQ(compose.config->store, "redis");
  EXPECT_EQ(compose.config->server.admin_listen.port, 9464);
  auto keyed = load_config_file(source("docker/sluice-compose.yaml"), env_of({{"QUBRID_API_KEY", "q"}}));
  ASSERT_TRUE(keyed.config) << issues(keyed);
  auto enabled = [](const Config& c) { return std::count_if(c.backends.begin(), c.backends.end(), [](const auto& b) { return b.enabled; }); };
  EXPECT_EQ(enabled(*keyed.config), enabled(*compose.config) + 1);  // QUBRID_API_KEY turns Qubrid on

  // Kubernetes base: digests and backend keys from the Secret.
  auto base = load_config_file(source("deploy/kubernetes/base/sluice.yaml"),
                               env_of({{"TEAM_KEY_SHA256", digest}, {"QUBRID_API_KEY", "q"}}));
  ASSERT_TRUE(base.config) << issues(base);
  EXPECT_EQ(base.config->store, "memory");
  // The Redis overlay: the same file, with the store and URL its Deployment patch sets.
  auto patch = YAML::LoadAllFromFile(source("deploy/kubernetes/overlays/redis/deployment-patch.yaml"));
  std::map<std::string, std::string> overlay{{"TEAM_KEY_SHA256", digest}, {"REDIS_PASSWORD", "pw"}};
  for (const auto& doc : patch)
    if (doc["kind"].as<std::string>() == "Deployment")
      for (const auto& var : doc["spec"]["template"]["spec"]["containers"][0]["env"])
        overlay[var["name"].as<std::string>()] = var["value"].as<std::string>();
  ASSERT_EQ(overlay.count("SLUICE_STORE"), 1u);
  auto redis = load_config_file(source("deploy/kubernetes/base/sluice.yaml"), env_of(overlay));
  ASSERT_TRUE(redis.config) << issues(redis);
  EXPECT_EQ(redis.config->store, "redis");
  EXPECT_EQ(redis.config->redis.url, "redis://:pw@sluice-redis:6379/0");

  // Without the Secret the pod does not start on a half-configured gateway: the error names the setting.
  auto missing = load_config_file(source("deploy/kubernetes/base/sluice.yaml"), env_of({}));
  EXPECT_FALSE(missing.config);
  EXPECT_NE(issues(missing).find("key_sha256"), std::string::npos) << issues(missing);
}

TEST(Deploy, EnvironmentOverridesReplaceTheirSettingAndNameThemselvesInErrors) {
  TempDir dir;
  auto path = dir.write("c.yaml", read(source("config/sluice.yaml")));
  auto r = load_config_file(path, env_of({{"SLUICE_LISTEN", "0.0.0.0:18080"},
                                          {"SLUICE_ADMIN_LISTEN", "0.0.0.0:19464"},
                                          {"SLUICE_WORKERS", "3"},
                                          {"SLUICE_LOG_LEVEL", "debug"},
                                          {"SLUICE_LOG_FORMAT", "text"}}));
  ASSERT_TRUE(r.config) << issues(r);
  EXPECT_EQ(r.config->server.listen.host, "0.0.0.0");
  EXPECT_EQ(r.config->server.listen.port, 18080);
  EXPECT_EQ(r.config->server.admin_listen.port, 19464);
  EXPECT_EQ(r.config->server.workers, 3u);
  EXPECT_EQ(r.config->log.level, "debug");
  EXPECT_EQ(r.config->log.format, "text");
  auto bad = load_config_file(path, env_of({{"SLUICE_LISTEN", "nowhere"}, {"SLUICE_STORE", "etcd"}}));
  EXPECT_FALSE(bad.config);
  EXPECT_NE(issues(bad).find("(set by SLUICE_LISTEN)"), std::string::npos) << issues(bad);
  EXPECT_NE(issues(bad).find("(set by SLUICE_STORE)"), std::string::npos) << issues(bad);
  // Set but empty means "not overridden".
  auto empty = load_config_file(path, env_of({{"SLUICE_LISTEN", ""}}));
  ASSERT_TRUE(empty.config);
  EXPECT_EQ(empty.config->server.listen.port, 8080);
}

TEST(Deploy, TheDockerfileBuildsWithCiMakeTargetsAndShipsWhatTheBinaryLinks) {
  auto d = parse_dockerfile(read(source("docker/Dockerfile")));
  ASSERT_EQ(d.stages.size(), 2u);
  EXPECT_EQ(d.stages[0].from.rfind("debian:bookworm ", 0), 0u) << d.stages[0].from;
  EXPECT_EQ(d.stages[1].from, "debian:bookworm-slim");
  // The build stage runs the Makefile's own targets: `make release`, whose binary CI's `make test-release` runs
  // the whole suite against, and ships that binary.
  std::string build_runs;
  for (const auto& r : d.stages[0].all("RUN")) build_runs += r + "\n";
  EXPECT_NE(build_runs.find("make deps"), std::string::npos);
  EXPECT_NE(build_runs.find("make release"), std::string::npos);
  EXPECT_EQ(build_runs.find("cmake "), std::string::npos) << "a second build recipe would drift from make";
  auto makefile = read(source("Makefile"));
  EXPECT_NE(makefile.find("\ntest: build"), std::string::npos);
  EXPECT_NE(makefile.find("\nbuild: deps"), std::string::npos);
  EXPECT_NE(makefile.find("\nrelease: deps"), std::string::npos);
  EXPECT_NE(makefile.find("\ntest-release: build release"), std::string::npos);
  EXPECT_NE(makefile.find("\nRELEASE_DIR ?= build-release\n"), std::string::npos);
  auto ci = read(source(".ci/run"));
  EXPECT_NE(ci.find("\nmake test\n"), std::string::npos);
  EXPECT_NE(ci.find("\nmake test-release\n"), std::string::npos);
  int shipped = 0;
  for (const auto& c : d.stages[1].all("COPY"))
    if (c.rfind("--from=build ", 0) == 0) {
      EXPECT_EQ(c, "--from=build /src/build-release/sluice /usr/local/bin/sluice");
      ++shipped;
    }
  EXPECT_EQ(shipped, 1);

  // The runtime stage: non-root, both ports, a health check, exec-form entrypoint, the config path by env.
  const auto& rt = d.stages[1];
  auto user = rt.all("USER");
  ASSERT_EQ(user.size(), 1u);
  EXPECT_NE(user[0].substr(0, user[0].find(':')), "0");
  EXPECT_NE(user[0].substr(0, user[0].find(':')), "root");
  auto expose = rt.all("EXPOSE");
  ASSERT_EQ(expose.size(), 1u);
  EXPECT_NE(expose[0].find("8080"), std::string::npos);
  EXPECT_NE(expose[0].find("9464"), std::string::npos);
  auto health = rt.all("HEALTHCHECK");
  ASSERT_EQ(health.size(), 1u);
  EXPECT_NE(health[0].find(R"(CMD ["/usr/local/bin/sluice", "healthcheck"])"), std::string::npos) << health[0];
  ASSERT_EQ(rt.all("ENTRYPOINT").size(), 1u);
  EXPECT_EQ(json_array(rt.all("ENTRYPOINT")[0]), std::vector<std::string>{"/usr/local/bin/sluice"});
  EXPECT_EQ(env_of_stage(rt)["SLUICE_CONFIG"], "/etc/sluice/sluice.yaml");
  // Its default config listens on every interface by itself: a mounted config's own listeners are not
  // overridden by the image's environment.
  auto image_config = image_config_source(rt);
  ASSERT_FALSE(image_config.empty());
  auto loaded = load_config_file(source(image_config), env_of({}));
  ASSERT_TRUE(loaded.config) << issues(loaded);
  EXPECT_EQ(loaded.config->server.listen.host, "0.0.0.0");
  EXPECT_EQ(loaded.config->server.admin_listen.host, "0.0.0.0");
  for (const auto& [name, value] : env_of_stage(rt)) EXPECT_EQ(name.find("LISTEN"), std::string::npos) << name;
  EXPECT_TRUE(fs::exists(source(".dockerignore")));

  // Every shared library the binary links comes from a package the runtime stage installs (or the base image).
  std::string runtime_runs;
  for (const auto& r : rt.all("RUN")) runtime_runs += r + " ";
  auto [code, ldd] = run_command({"/usr/bin/ldd", sluice_binary()});
  ASSERT_EQ(code, 0) << ldd;
  std::regex lib(R"(=> (/\S+) \()");
  const std::set<std::string> in_base{"libc6", "libgcc-s1", "libstdc++6",
                                      // linked only by `make test-sanitize` builds, never the image's
                                      "libasan8", "libubsan1", "libtsan2"};
  int checked = 0;
  for (std::sregex_iterator it(ldd.begin(), ldd.end(), lib), end; it != end; ++it) {
    std::string path = (*it)[1], package;
    for (const auto& candidate : {fs::canonical(path).string(), "/usr" + path, path}) {
      auto [dcode, owner] = run_command({"/usr/bin/dpkg", "-S", candidate});
      if (dcode == 0) {
        package = owner.substr(0, owner.find(':'));
        break;
      }
    }
    ASSERT_FALSE(package.empty()) << "no package owns " << path;
    ++checked;
    if (in_base.count(package)) continue;
    EXPECT_NE(runtime_runs.find(" " + package + " "), std::string::npos)
        << path << " comes from " << package << ", which the runtime stage does not install";
  }
  EXPECT_GE(checked, 6);
}

TEST(Deploy, ComposeMountsFilesThatExistAndItsPrometheusConfigPassesPromtool) {
  auto compose = YAML::LoadFile(source("docker/compose.yaml"));
  auto services = compose["services"];
  for (const char* name : {"sluice", "redis", "prometheus", "grafana", "simulator"})
    EXPECT_TRUE(services[name]) << "compose.yaml has no " << name << " service";
  std::set<std::string> mounted;
  for (const auto& s : services)
    for (const auto& v : s.second["volumes"]) {
      auto spec = v.as<std::string>();
      auto host = spec.substr(0, spec.find(':'));
      auto target = spec.substr(spec.find(':') + 1);
      target = target.substr(0, target.find(':'));
      if (host.rfind(".", 0) != 0) continue;  // named volumes
      EXPECT_TRUE(fs::exists(source("docker/" + host))) << s.first.as<std::string>() << " mounts missing " << host;
      mounted.insert(target);
    }
  // The simulator stands in for the GPU server the compose config points at.
  auto sim = services["simulator"]["command"];
  ASSERT_TRUE(sim && sim.IsSequence());
  EXPECT_EQ(sim[0].as<std::string>(), "simulate");
  auto cfg = load_config_file(source("docker/sluice-compose.yaml"), env_of({}));
  ASSERT_TRUE(cfg.config) << issues(cfg);
  bool points_at_simulator = false;
  for (const auto& b : cfg.config->backends)
    if (b.url.find("simulator:8000") != std::string::npos) points_at_simulator = true;
  EXPECT_TRUE(points_at_simulator);
  EXPECT_TRUE(mounted.count("/etc/sluice/sluice.yaml"));
  EXPECT_TRUE(mounted.count("/etc/prometheus/alerts.yml"));  // where prometheus.yml's rule_files looks

  // promtool on the compose Prometheus config, with the rules beside it as in the container.
  TempDir dir;
  dir.write("prometheus.yml", read(source("docker/prometheus.yml")));
  dir.write("alerts.yml", read(source("deploy/prometheus/alerts.yml")));
  auto [code, out] = run_command({"/usr/bin/promtool", "check", "config", dir.path() + "/prometheus.yml"});
  EXPECT_EQ(code, 0) << out;
  // Grafana finds the dashboard where its provisioning says it is.
  auto providers = YAML::LoadFile(source("docker/grafana/dashboards.yaml"));
  auto path = providers["providers"][0]["options"]["path"].as<std::string>();
  EXPECT_TRUE(mounted.count(path + "/sluice-dashboard.json"));
}

TEST(Deploy, KubernetesManifestsAgreeWithTheConfigAndWithEachOther) {
  const std::string root = source("deploy/kubernetes");
  // Every kustomization names files that exist; every manifest has a kind and a name.
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.path().filename() != "kustomization.yaml") continue;
    auto k = YAML::LoadFile(entry.path().string());
    auto dir = entry.path().parent_path();
    for (const char* list : {"resources", "components"})
      for (const auto& r : k[list]) EXPECT_TRUE(fs::exists(dir / r.as<std::string>())) << entry.path() << ": " << r;
    for (const auto& p : k["patches"]) EXPECT_TRUE(fs::exists(dir / p["path"].as<std::string>()));
    for (const auto& g : k["configMapGenerator"])
      for (const auto& f : g["files"]) EXPECT_TRUE(fs::exists(dir / f.as<std::string>()));
    for (const auto& r : k["resources"]) {
      auto file = dir / r.as<std::string>();
      if (fs::is_directory(file)) continue;
      for (const auto& doc : YAML::LoadAllFromFile(file.string())) {
        EXPECT_TRUE(doc["apiVersion"] && doc["kind"] && doc["metadata"]["name"]) << file;
      }
    }
  }
  auto cfg = load_config_file(root + "/base/sluice.yaml", env_of({{"TEAM_KEY_SHA256", std::string(64, 'a')}}));
  ASSERT_TRUE(cfg.config) << issues(cfg);
  auto deploy = YAML::LoadFile(root + "/base/deployment.yaml");
  auto pod = deploy["spec"]["template"]["spec"];
  auto c = pod["containers"][0];
  std::map<std::string, int> ports;
  for (const auto& p : c["ports"]) ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
  EXPECT_EQ(ports["http"], cfg.config->server.listen.port);
  EXPECT_EQ(ports["admin"], cfg.config->server.admin_listen.port);
  EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/readyz");
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["port"].as<std::string>(), "admin");
  // The grace period covers the preStop pause and the whole drain.
  int grace = pod["terminationGracePeriodSeconds"].as<int>();
  int pause = std::stoi(c["lifecycle"]["preStop"]["exec"]["command"][1].as<std::string>());
  EXPECT_GT(grace, pause + cfg.config->server.drain_timeout.count() / 1000);
  // Restricted: non-root (the image's user), no privilege escalation, read-only root, no capabilities.
  EXPECT_TRUE(pod["securityContext"]["runAsNonRoot"].as<bool>());
  auto image_user = parse_dockerfile(read(source("docker/Dockerfile"))).stages[1].all("USER")[0];
  EXPECT_EQ(pod["securityContext"]["runAsUser"].as<std::string>(), image_user.substr(0, image_user.find(':')));
  EXPECT_FALSE(c["securityContext"]["allowPrivilegeEscalation"].as<bool>());
  EXPECT_TRUE(c["securityContext"]["readOnlyRootFilesystem"].as<bool>());
  EXPECT_EQ(c["securityContext"]["capabilities"]["drop"][0].as<std::string>(), "ALL");
  EXPECT_EQ(c["env"][0]["value"].as<std::string>(), "/etc/sluice/sluice.yaml");
  EXPECT_EQ(c["volumeMounts"][0]["mountPath"].as<std::string>(), "/etc/sluice");
  // The Operator's rules are the same rules promtool checks in deploy/prometheus.
  auto rule = YAML::LoadFile(root + "/components/prometheus-operator/prometheusrule.yaml");
  auto alerts = YAML::LoadFile(source("deploy/prometheus/alerts.yml"));
  EXPECT_EQ(emit(rule["spec"]["groups"]), emit(alerts["groups"]));
}

TEST(Deploy, TheBinaryStartedLikeTheImageEntrypointServesChecksItsHealthAndDrainsOnSigterm) {
  auto d = parse_dockerfile(read(source("docker/Dockerfile")));
  const auto& rt = d.stages[1];
  auto entry = json_array(rt.all("ENTRYPOINT")[0]);
  auto cmd = json_array(rt.all("CMD")[0]);
  auto env = env_of_stage(rt);
  auto user = rt.all("USER")[0];
  auto uid = user.substr(0, user.find(':')), gid = user.substr(user.find(':') + 1);

  // The image's layout, in a directory the image's user may read: the binary and the default config.
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  auto binary = dir.path() + "/sluice";
  fs::copy_file(sluice_binary(), binary);
  auto config = dir.write("sluice.yaml", read(source(image_config_source(rt))));
  ::chmod(config.c_str(), 0644);

  // The image's environment, except that its fixed ports become ephemeral ones on loopback.
  env["SLUICE_CONFIG"] = config;
  env["SLUICE_LISTEN"] = "127.0.0.1:0";
  env["SLUICE_ADMIN_LISTEN"] = "127.0.0.1:0";
  env["SLUICE_LOG_FORMAT"] = "text";
  std::vector<std::string> argv;
  const bool root = ::geteuid() == 0;
  if (root) argv = {"/usr/bin/setpriv", "--reuid=" + uid, "--regid=" + gid, "--clear-groups", "--"};
  argv.push_back("/usr/bin/env");
  argv.push_back("-i");
  for (const auto& [k, v] : env) argv.push_back(k + "=" + v);
  argv.push_back(binary);
  for (std::size_t i = 1; i < entry.size(); ++i) argv.push_back(entry[i]);
  for (const auto& a : cmd) argv.push_back(a);
  if (!root && ::getuid() == 0) GTEST_SKIP();

  Child gw(argv);
  auto line = gw.wait_for_stderr("listening on", std::chrono::seconds(30));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(line, m, std::regex(R"(listening on [^ ]+:(\d+) \(admin [^ ]+:(\d+)\))")))
      << line << gw.err();
  auto port = static_cast<std::uint16_t>(std::stoi(m[1]));
  auto admin = static_cast<std::uint16_t>(std::stoi(m[2]));

  // Not root.
  auto status = read("/proc/" + std::to_string(gw.pid()) + "/status");
  std::smatch um;
  ASSERT_TRUE(std::regex_search(status, um, std::regex(R"(Uid:\s+(\d+))")));
  EXPECT_NE(um[1], "0");
  if (root) {
    EXPECT_EQ(um[1], uid);
  }

  // The HEALTHCHECK command, run the same way (it finds the admin port through the same config and env).
  std::vector<std::string> check = {"/usr/bin/env", "-i", "SLUICE_CONFIG=" + config,
                                    "SLUICE_ADMIN_LISTEN=127.0.0.1:" + std::to_string(admin), binary, "healthcheck"};
  auto [hcode, hout] = run_command(check);
  EXPECT_EQ(hcode, 0) << hout;

  // Serves the default config's demo model with the documented demo key.
  auto r = post_json(port, "/v1/chat/completions", R"({"model":"demo","messages":[{"role":"user","content":"hi"}]})",
                     "sk-sluice-demo");
  EXPECT_EQ(r.status, 200) << r.body;

  // SIGTERM with a stream in flight: not ready any more, the stream finishes whole, then a clean exit.
  HttpClient stream(port);
  ASSERT_TRUE(stream.send_raw(raw_post(
      "/v1/chat/completions",
      R"({"model":"demo","stream":true,"simulator":{"tokens":30,"tokens_per_second":15},"messages":[{"role":"user","content":"long"}]})",
      "sk-sluice-demo")));
  auto head = stream.read_head();
  ASSERT_EQ(head.status, 200);
  gw.signal(SIGTERM);
  EXPECT_TRUE(wait_until([&] {
    return HttpClient(admin).request("GET", "/readyz").status == 503;
  }, std::chrono::seconds(10)));
  std::string body;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (body.find("[DONE]") == std::string::npos && std::chrono::steady_clock::now() < until)
    body += stream.read_some(std::chrono::seconds(1));
  EXPECT_NE(body.find("[DONE]"), std::string::npos) << body;
  EXPECT_EQ(body.find("\"error\""), std::string::npos) << body;
  EXPECT_EQ(gw.wait_exit(std::chrono::seconds(40)), 0) << gw.err();
  auto [unhealthy, uout] = run_command(check);  // gone: the health check says so
  EXPECT_NE(unhealthy, 0) << uout;
}

}  // namespace
}  // namespace sluice::test
