#include "policy/keyring.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "policy/decide.hpp"
#include "policy/limiter.hpp"

namespace sluice::policy {
namespace {

KeyConfig key_config(std::string name, std::string_view secret, std::vector<std::string> models = {}) {
  KeyConfig k;
  k.name = std::move(name);
  k.key_sha256 = sha256_hex(secret);
  k.models = std::move(models);
  return k;
}

// --- hashing and keys -------------------------------------------------------------------------------

TEST(Sha256HexTest, KnownDigests) {
  EXPECT_EQ(sha256_hex("sk-sluice-demo"), "1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(KeyringTest, FindMatchesTheRightEntry) {
  Keyring ring({key_config("alice", "sk-alice", {"llama"}), key_config("bob", "sk-bob")});
  EXPECT_FALSE(ring.empty());
  const KeyEntry* a = ring.find("sk-alice");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->name, "alice");
  EXPECT_EQ(a->models, std::vector<std::string>{"llama"});
  const KeyEntry* b = ring.find("sk-bob");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->name, "bob");
}

TEST(KeyringTest, FindRejectsOthers) {
  Keyring ring({key_config("alice", "sk-alice"), key_config("bob", "sk-bob")});
  EXPECT_EQ(ring.find(""), nullptr);
  EXPECT_EQ(ring.find("sk-carol"), nullptr);
  EXPECT_EQ(ring.find("sk-alice "), nullptr);
  EXPECT_EQ(ring.find("SK-ALICE"), nullptr);
  EXPECT_EQ(ring.find("sk-alic"), nullptr);
  // The digest itself is not a key.
  EXPECT_EQ(ring.find(sha256_hex("sk-alice")), nullptr);
}

TEST(KeyringTest, UppercaseDigestInConfigStillMatches) {
  KeyConfig k = key_config("alice", "sk-alice");
  for (auto& c : k.key_sha256) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Keyring ring({k});
  ASSERT_NE(ring.find("sk-alice"), nullptr);
}

TEST(KeyringTest, EmptyRingFindsNothing) {
  Keyring ring({});
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.find("sk-anything"), nullptr);
}

TEST(KeyringTest, Allows) {
  Keyring ring(
      {key_config("all", "k1"), key_config("star", "k2", {"*"}), key_config("named", "k3", {"a", "b"})});
  const auto& all = *ring.find("k1");
  const auto& star = *ring.find("k2");
  const auto& named = *ring.find("k3");
  EXPECT_TRUE(Keyring::allows(all, "anything"));
  EXPECT_TRUE(Keyring::allows(star, "anything"));
  EXPECT_TRUE(Keyring::allows(named, "a"));
  EXPECT_TRUE(Keyring::allows(named, "b"));
  EXPECT_FALSE(Keyring::allows(named, "c"));
  EXPECT_FALSE(Keyring::allows(named, ""));
  EXPECT_FALSE(Keyring::allows(named, "A"));
}

TEST(KeyringTest, GlobsAllowFamiliesOfModels) {
  Keyring ring({key_config("a", "sk-a", {"openai/*", "demo"})});
  const auto* a = ring.find("sk-a");
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(Keyring::allows(*a, "openai/gpt-oss-120b"));
  EXPECT_TRUE(Keyring::allows(*a, "openai/gpt-oss-20b"));
  EXPECT_TRUE(Keyring::allows(*a, "demo"));
  EXPECT_FALSE(Keyring::allows(*a, "meta/llama"));
  EXPECT_FALSE(Keyring::allows(*a, "openai"));  // "openai/*" needs the slash
  EXPECT_FALSE(Keyring::allows(*a, "demo2"));
}

TEST(GlobMatchTest, Cases) {
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*", "anything/at/all"));
  EXPECT_TRUE(glob_match("a*c", "abbbc"));
  EXPECT_TRUE(glob_match("a*c", "ac"));
  EXPECT_FALSE(glob_match("a*c", "abcd"));
  EXPECT_TRUE(glob_match("*-120b", "openai/gpt-oss-120b"));
  EXPECT_TRUE(glob_match("a**b", "ab"));
  EXPECT_FALSE(glob_match("abc", "ab"));
  EXPECT_FALSE(glob_match("", "a"));
  // Many stars against a long mismatch stays fast (no exponential backtracking).
  EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*a*b", std::string(5000, 'a')));
}

TEST(KeyringTest, ThousandsOfKeysAreFoundByDigest) {
  std::vector<KeyConfig> keys;
  for (int i = 0; i < 5000; ++i) keys.push_back(key_config("k" + std::to_string(i), "sk-" + std::to_string(i)));
  Keyring ring(keys);
  const auto* k = ring.find("sk-4321");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->name, "k4321");
  EXPECT_EQ(ring.find("sk-5000"), nullptr);
}

TEST(GenerateKeyTest, ShapeAndUniqueness) {
  const std::string a = generate_key();
  const std::string b = generate_key();
  EXPECT_NE(a, b);
  for (const auto& k : {a, b}) {
    EXPECT_EQ(k.rfind("sk-sluice-", 0), 0u) << k;
    EXPECT_EQ(k.size(), 53u) << k;
    for (char c : k.substr(10))
      EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << k;
  }
  // A generated key works end to end.
  KeyConfig kc;
  kc.name = "gen";
  kc.key_sha256 = sha256_hex(a);
  Keyring ring({kc});
  EXPECT_NE(ring.find(a), nullptr);
  EXPECT_EQ(ring.find(b), nullptr);
}

TEST(GenerateKeyTest, CharactersAreSpreadOverTheAlphabet) {
  // 43 random characters from 64: fifty keys use far more than half the alphabet.
  std::set<char> seen;
  for (int i = 0; i < 50; ++i)
    for (char c : generate_key().substr(10)) seen.insert(c);
  EXPECT_GT(seen.size(), 48u);
}

TEST(PresentedKeyTest, BearerToken) {
  EXPECT_EQ(presented_key("Bearer sk-x", ""), "sk-x");
  EXPECT_EQ(presented_key("bearer sk-x", ""), "sk-x");
  EXPECT_EQ(presented_key("Bearer    sk-x  ", ""), "sk-x");
  EXPECT_EQ(presented_key("  Bearer sk-x", ""), "sk-x");
  EXPECT_EQ(presented_key("Bearer\tsk-x", "fallback"), "fallback");  // the scheme needs a space
  // The bearer token wins over x-api-key.
  EXPECT_EQ(presented_key("Bearer sk-x", "sk-y"), "sk-x");
}

TEST(PresentedKeyTest, SchemeIsCaseInsensitive) {
  // RFC 9110 §11.1: the auth scheme is case-insensitive ("BEARER", "bEARER" too).
  EXPECT_EQ(presented_key("BEARER sk-x", ""), "sk-x");
  EXPECT_EQ(presented_key("bEaReR sk-x", ""), "sk-x");
  // Any other scheme, however close, is not Bearer: x-api-key is used.
  for (const char* other : {"Bearex sk-x", "Basic! sk-x", "Bear@r sk-x", "BEARE\xd2 sk-x", "\xc2" "earer sk-x"})
    EXPECT_EQ(presented_key(other, "fallback"), "fallback") << other;
}

TEST(PresentedKeyTest, FallsBackToXApiKey) {
  EXPECT_EQ(presented_key("", "sk-y"), "sk-y");
  EXPECT_EQ(presented_key("", "  sk-y "), "sk-y");
  EXPECT_EQ(presented_key("Basic abc", "sk-y"), "sk-y");
  EXPECT_EQ(presented_key("Basic abc", ""), "");
  EXPECT_EQ(presented_key("Bearer", "sk-y"), "sk-y");
  EXPECT_EQ(presented_key("Bearer ", "sk-y"), "sk-y");
  EXPECT_EQ(presented_key("sk-x", "sk-y"), "sk-y");
  EXPECT_EQ(presented_key("", ""), "");
}

// --- policy -----------------------------------------------------------------------------------------

// Two backends (one disabled), three models, three keys.
Config test_config() {
  Config c;
  BackendConfig up;
  up.name = "up";
  up.url = "http://127.0.0.1:8000/v1";
  BackendConfig down;
  down.name = "down";
  down.url = "http://127.0.0.1:8001/v1";
  down.enabled = false;  // e.g. its api_key variable was unset
  c.backends = {up, down};

  ModelConfig llama;
  llama.name = "llama";
  llama.aliases = {"llama-latest", "meta/llama"};
  llama.targets = {TargetConfig{"down", "llama-on-down", 1}, TargetConfig{"up", "llama-8b", 1},
                   TargetConfig{"up", "", 1}};
  ModelConfig gone;
  gone.name = "gone";
  gone.targets = {TargetConfig{"down", "", 1}};
  ModelConfig qwen;
  qwen.name = "qwen";
  qwen.targets = {TargetConfig{"up", "", 1}};
  c.models = {llama, gone, qwen};

  c.keys = {key_config("alice", "sk-alice", {"llama"}), key_config("admin", "sk-admin"),
            key_config("star", "sk-star", {"*"})};
  return c;
}

const KeyEntry* authed(const Policy& p, std::string_view secret) {
  auto r = p.authenticate("Bearer " + std::string(secret), "");
  if (!std::holds_alternative<const KeyEntry*>(r)) {
    ADD_FAILURE() << "not authenticated: " << std::get<openai::ApiError>(r).message;
    return nullptr;
  }
  return std::get<const KeyEntry*>(r);
}

TEST(PolicyTest, AuthenticateFindsTheKey) {
  const Config c = test_config();
  Policy p(c);
  const KeyEntry* k = authed(p, "sk-alice");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->name, "alice");
  auto via_header = p.authenticate("", "sk-admin");
  ASSERT_TRUE(std::holds_alternative<const KeyEntry*>(via_header));
  EXPECT_EQ(std::get<const KeyEntry*>(via_header)->name, "admin");
}

// A snapshot's policy finds the limiter's state of each key and model that has limits once, so a request
// names no key or model to the limiter; one without limits gets none, and a policy without a limiter none.
TEST(PolicyTest, LimitStatesAreFoundOncePerPolicy) {
  Config c = test_config();
  c.keys[0].limits.rpm = 10;  // alice
  c.models[0].limits.tpm = 1000;  // llama
  LocalLimiter limiter;
  Policy p(c, &limiter);
  const KeyEntry* alice = authed(p, "sk-alice");
  const KeyEntry* admin = authed(p, "sk-admin");
  ASSERT_NE(alice, nullptr);
  ASSERT_NE(admin, nullptr);
  EXPECT_EQ(alice->limit_state, limiter.key_state("alice"));
  EXPECT_EQ(admin->limit_state, nullptr);
  auto llama = p.route(alice, "meta/llama");  // by an alias: the model's own state
  ASSERT_TRUE(std::holds_alternative<Forward>(llama));
  EXPECT_EQ(std::get<Forward>(llama).model_state, limiter.model_state("llama"));
  auto qwen = p.route(admin, "qwen");
  ASSERT_TRUE(std::holds_alternative<Forward>(qwen));
  EXPECT_EQ(std::get<Forward>(qwen).model_state, nullptr);

  // A reload's policy finds the same states: the allowance carries over.
  Policy again(c, &limiter);
  EXPECT_EQ(authed(again, "sk-alice")->limit_state, alice->limit_state);

  Policy plain(c);
  EXPECT_EQ(authed(plain, "sk-alice")->limit_state, nullptr);
  auto plain_llama = plain.route(nullptr, "llama");
  ASSERT_TRUE(std::holds_alternative<Forward>(plain_llama));
  EXPECT_EQ(std::get<Forward>(plain_llama).model_state, nullptr);
}

TEST(PolicyTest, MissingKeyIs401) {
  const Config c = test_config();
  Policy p(c);
  for (auto [auth, xkey] :
       {std::pair{"", ""}, std::pair{"Bearer ", ""}, std::pair{"Basic dXNlcjpwYXNz", ""}}) {
    auto r = p.authenticate(auth, xkey);
    ASSERT_TRUE(std::holds_alternative<openai::ApiError>(r)) << auth;
    const auto& e = std::get<openai::ApiError>(r);
    EXPECT_EQ(e.status, 401);
    EXPECT_EQ(e.code, "missing_api_key");
  }
}

TEST(PolicyTest, WrongKeyIs401AndIsNeverEchoed) {
  const Config c = test_config();
  Policy p(c);
  const std::string secret = "sk-wrong-0123456789abcdef";
  for (auto r : {p.authenticate("Bearer " + secret, ""), p.authenticate("", secret)}) {
    ASSERT_TRUE(std::holds_alternative<openai::ApiError>(r));
    const auto& e = std::get<openai::ApiError>(r);
    EXPECT_EQ(e.status, 401);
    EXPECT_EQ(e.code, "invalid_api_key");
    EXPECT_EQ(e.message.find(secret), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find("0123"), std::string::npos) << e.message;  // not even in part
    EXPECT_EQ(openai::error_json(e).find("0123"), std::string::npos);
  }
}

// --- a connection's memo of its last key ------------------------------------------------------------

const KeyEntry* authed(const Policy& p, std::string_view secret, KeyMemo& memo) {
  auto r = p.authenticate("Bearer " + std::string(secret), "", &memo);
  return std::holds_alternative<const KeyEntry*>(r) ? std::get<const KeyEntry*>(r) : nullptr;
}

TEST(KeyMemoTest, AKeyLetInIsRecalledOnlyForTheSameKeyAndPolicy) {
  const Config c = test_config();
  Policy p(c);
  const auto g = p.generation();
  KeyMemo memo;
  EXPECT_EQ(memo.recall("sk-alice", g), nullptr);  // nothing remembered yet
  const KeyEntry* alice = authed(p, "sk-alice", memo);
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(memo.recall("sk-alice", g), alice);
  EXPECT_EQ(authed(p, "sk-alice", memo), alice);
  // Only the very same key, for the same policy.
  for (std::string_view other : {"sk-alicE", "sk-alic", "sk-alice ", "", "sk-admin"})
    EXPECT_EQ(memo.recall(other, g), nullptr) << other;
  EXPECT_EQ(memo.recall("sk-alice", g + 1), nullptr);
  // A wrong key is refused and leaves the memo as it was; another good key replaces it.
  EXPECT_EQ(authed(p, "sk-mallory", memo), nullptr);
  EXPECT_EQ(memo.recall("sk-alice", g), alice);
  const KeyEntry* admin = authed(p, "sk-admin", memo);
  ASSERT_NE(admin, nullptr);
  EXPECT_EQ(admin->name, "admin");
  EXPECT_EQ(memo.recall("sk-alice", g), nullptr);
  EXPECT_EQ(memo.recall("sk-admin", g), admin);
  memo.forget();
  EXPECT_EQ(memo.recall("sk-admin", g), nullptr);
}

TEST(KeyMemoTest, EachPolicyHasItsOwnGeneration) {
  const Config c = test_config();
  Policy a(c), b(c);
  EXPECT_NE(a.generation(), 0u);
  EXPECT_NE(b.generation(), 0u);
  EXPECT_NE(a.generation(), b.generation());
}

TEST(KeyMemoTest, AKeyAReloadRemovedIsRefusedOnAConnectionThatRememberedIt) {
  const Config before = test_config();
  Policy p1(before);
  KeyMemo memo;
  ASSERT_NE(authed(p1, "sk-alice", memo), nullptr);
  Config after = test_config();
  after.keys.erase(after.keys.begin());  // alice's key is gone
  Policy p2(after);
  auto r = p2.authenticate("Bearer sk-alice", "", &memo);
  ASSERT_TRUE(std::holds_alternative<openai::ApiError>(r));
  EXPECT_EQ(std::get<openai::ApiError>(r).code, "invalid_api_key");
  // And a key that stays is found again (and remembered) by the new policy.
  const KeyEntry* admin = authed(p2, "sk-admin", memo);
  ASSERT_NE(admin, nullptr);
  EXPECT_EQ(memo.recall("sk-admin", p2.generation()), admin);
  EXPECT_EQ(memo.recall("sk-admin", p1.generation()), nullptr);
  // With auth off, no key whatever the memo holds.
  Config open = test_config();
  open.auth_required = false;
  Policy p3(open);
  auto none = p3.authenticate("Bearer sk-admin", "", &memo);
  ASSERT_TRUE(std::holds_alternative<const KeyEntry*>(none));
  EXPECT_EQ(std::get<const KeyEntry*>(none), nullptr);
}

TEST(PolicyTest, AuthNoneGivesNoKey) {
  Config c = test_config();
  c.auth_required = false;
  Policy p(c);
  for (auto r :
       {p.authenticate("", ""), p.authenticate("Bearer sk-alice", ""), p.authenticate("Bearer junk", "")}) {
    ASSERT_TRUE(std::holds_alternative<const KeyEntry*>(r));
    EXPECT_EQ(std::get<const KeyEntry*>(r), nullptr);
  }
  // Without a key every model is visible and routable.
  EXPECT_EQ(p.visible_models(nullptr), (std::vector<std::string>{"llama", "gone", "qwen"}));
  EXPECT_TRUE(std::holds_alternative<Forward>(p.route(nullptr, "qwen")));
}

TEST(PolicyTest, UnknownModelIs404) {
  const Config c = test_config();
  Policy p(c);
  auto r = p.route(authed(p, "sk-admin"), "gpt-5");
  ASSERT_TRUE(std::holds_alternative<openai::ApiError>(r));
  const auto& e = std::get<openai::ApiError>(r);
  EXPECT_EQ(e.status, 404);
  EXPECT_EQ(e.code, "model_not_found");
  EXPECT_EQ(e.param, "model");
  // Names are exact.
  EXPECT_TRUE(std::holds_alternative<openai::ApiError>(p.route(nullptr, "Llama")));
  EXPECT_TRUE(std::holds_alternative<openai::ApiError>(p.route(nullptr, "")));
}

TEST(PolicyTest, AliasResolvesToTheModel) {
  const Config c = test_config();
  Policy p(c);
  for (auto name : {"llama", "llama-latest", "meta/llama"}) {
    auto r = p.route(authed(p, "sk-alice"), name);
    ASSERT_TRUE(std::holds_alternative<Forward>(r)) << name;
    const auto& f = std::get<Forward>(r);
    ASSERT_NE(f.model, nullptr);
    EXPECT_EQ(f.model, &c.models[0]) << name;
    EXPECT_EQ(f.key->name, "alice");
  }
}

TEST(PolicyTest, KeyNotAllowedIs403) {
  const Config c = test_config();
  Policy p(c);
  auto r = p.route(authed(p, "sk-alice"), "qwen");
  ASSERT_TRUE(std::holds_alternative<openai::ApiError>(r));
  const auto& e = std::get<openai::ApiError>(r);
  EXPECT_EQ(e.status, 403);
  EXPECT_EQ(e.param, "model");
  // An allowed model reached through an alias is allowed; "*" allows everything.
  EXPECT_TRUE(std::holds_alternative<Forward>(p.route(authed(p, "sk-alice"), "meta/llama")));
  EXPECT_TRUE(std::holds_alternative<Forward>(p.route(authed(p, "sk-star"), "qwen")));
}

TEST(PolicyTest, AllBackendsDisabledIs503) {
  const Config c = test_config();
  Policy p(c);
  auto r = p.route(authed(p, "sk-admin"), "gone");
  ASSERT_TRUE(std::holds_alternative<openai::ApiError>(r));
  const auto& e = std::get<openai::ApiError>(r);
  EXPECT_EQ(e.status, 503);
  EXPECT_EQ(e.code, "no_backend_available");
}

TEST(PolicyTest, TargetsInOrderSkippingDisabledBackends) {
  const Config c = test_config();
  Policy p(c);
  auto r = p.route(authed(p, "sk-admin"), "llama");
  ASSERT_TRUE(std::holds_alternative<Forward>(r));
  const auto& f = std::get<Forward>(r);
  ASSERT_EQ(f.targets.size(), 2u);
  EXPECT_EQ(f.targets[0], &c.models[0].targets[1]);
  EXPECT_EQ(f.targets[0]->model, "llama-8b");
  EXPECT_EQ(f.targets[1], &c.models[0].targets[2]);
  EXPECT_EQ(f.targets[1]->backend, "up");
}

TEST(PolicyTest, VisibleModelsFollowTheKey) {
  const Config c = test_config();
  Policy p(c);
  EXPECT_EQ(p.visible_models(authed(p, "sk-alice")), std::vector<std::string>{"llama"});
  EXPECT_EQ(p.visible_models(authed(p, "sk-admin")), (std::vector<std::string>{"llama", "gone", "qwen"}));
  EXPECT_EQ(p.visible_models(authed(p, "sk-star")), (std::vector<std::string>{"llama", "gone", "qwen"}));
}

TEST(PolicyAliasTest, AKeyMayNameAModelByItsAlias) {
  Config c;
  c.backends.push_back(BackendConfig{});
  c.backends[0].name = "b";
  ModelConfig m;
  m.name = "meta-llama/Llama-3.1-8B-Instruct";
  m.aliases = {"llama"};
  m.targets = {TargetConfig{"b", "", 1}};
  c.models.push_back(m);
  KeyConfig k;
  k.name = "k";
  k.key_sha256 = sha256_hex("sk-alias");
  k.models = {"llama"};
  c.keys.push_back(k);
  Policy policy(c);
  auto auth = policy.authenticate("Bearer sk-alias", "");
  const KeyEntry* key = std::get<const KeyEntry*>(auth);
  ASSERT_NE(key, nullptr);
  EXPECT_TRUE(std::holds_alternative<Forward>(policy.route(key, "llama")));
  EXPECT_TRUE(std::holds_alternative<Forward>(policy.route(key, "meta-llama/Llama-3.1-8B-Instruct")));
  EXPECT_EQ(policy.visible_models(key), std::vector<std::string>{"meta-llama/Llama-3.1-8B-Instruct"});
}

}  // namespace
}  // namespace sluice::policy
