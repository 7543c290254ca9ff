"""hostd's settings (:mod:`hostd.config`) and their documentation in ``conf/hostd.toml``."""
from __future__ import annotations

import hashlib
import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from hostd.config import LIMIT_KEYS, SETTINGS, ConfigError, load_config
from hostd.policy import TOKEN_FIELDS

pytestmark = pytest.mark.timeout(60)

CONF = Path(__file__).resolve().parent.parent / "conf" / "hostd.toml"
DEFAULTS = {s.key: s.default for s in SETTINGS}


def write_toml(tmp_path, text):
    path = tmp_path / "hostd.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- merging -----------------------------------------------------------------

def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config()
    values = config.as_dict()
    assert set(values) == set(DEFAULTS)
    for key, default in DEFAULTS.items():
        if key != "storage.data_dir":
            assert values[key] == default, key
    assert config["server.port"] == 8000
    assert config["limits.call_timeout_s"] == 30.0
    assert config["modules.paths"] == ["contrib_modules"]
    # the data dir is made absolute (relative to the current directory)
    assert config["storage.data_dir"] == str(tmp_path / "insights-data")
    assert config.data_path("run", "x") == tmp_path / "insights-data" / "run" / "x"


def test_setting_types_match_defaults():
    for setting in SETTINGS:
        assert isinstance(setting.default, setting.type), setting.key
        assert setting.help.strip(), setting.key
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", setting.key) or setting.key == "peers", setting.key


def test_file_is_merged_over_defaults(tmp_path):
    path = write_toml(tmp_path, """
        [server]
        port = 9001

        [limits]
        call_timeout_s = 3
        max_body_mb = 0.5

        [modules]
        paths = ["a", "b"]

        [logging]
        level = "DEBUG"
    """)
    config = load_config(path)
    assert config["server.port"] == 9001
    assert config["limits.call_timeout_s"] == 3.0 and type(config["limits.call_timeout_s"]) is float
    assert config["limits.max_body_mb"] == 0.5
    assert config["modules.paths"] == ["a", "b"]
    assert config["logging.level"] == "DEBUG"
    assert config["server.bind"] == DEFAULTS["server.bind"]
    assert config["events.batch_size"] == DEFAULTS["events.batch_size"]


def test_command_line_overrides_win(tmp_path):
    path = write_toml(tmp_path, """
        [server]
        port = 9001
        workers = 4
    """)
    config = load_config(path, {"server.port": 9100, "server.workers": None,
                                "storage.data_dir": str(tmp_path / "data")})
    assert config["server.port"] == 9100
    assert config["server.workers"] == 4  # None means "not given on the command line"
    assert config["storage.data_dir"] == str(tmp_path / "data")


def test_overrides_without_a_file(tmp_path):
    config = load_config(None, {"storage.mongo_url": "mongodb://h:1/", "modules.paths": "mods",
                                "storage.data_dir": str(tmp_path)})
    assert config["storage.mongo_url"] == "mongodb://h:1/"
    assert config["modules.paths"] == ["mods"]


def test_unknown_key_in_file_is_named(tmp_path):
    path = write_toml(tmp_path, """
        [server]
        prot = 9001
    """)
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_config(path)


def test_unknown_section_is_named(tmp_path):
    path = write_toml(tmp_path, """
        [sever]
        port = 9001
    """)
    with pytest.raises(ConfigError, match=r"sever\.port"):
        load_config(path)


def test_unknown_override_is_named():
    with pytest.raises(ConfigError, match=r"limits\.nope"):
        load_config(None, {"limits.nope": 1})


@pytest.mark.parametrize("toml, key", [
    ('[server]\nport = "8000"\n', "server.port"),
    ("[server]\nport = 80.5\n", "server.port"),
    ("[server]\nport = true\n", "server.port"),
    ("[server]\nbind = 127\n", "server.bind"),
    ('[limits]\ncall_timeout_s = "slow"\n', "limits.call_timeout_s"),
    ("[modules]\npaths = 3\n", "modules.paths"),
])
def test_wrong_type_in_file_is_named(tmp_path, toml, key):
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(path)


def test_wrong_type_override_is_an_error():
    with pytest.raises(ConfigError, match=r"server\.workers"):
        load_config(None, {"server.workers": "two"})


def test_unreadable_or_invalid_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError):
        load_config(write_toml(tmp_path, "[server\nport = \n"))


# -- module limits -------------------------------------------------------------

def test_limits_without_overrides_are_the_settings(tmp_path):
    config = load_config(None, {"limits.call_timeout_s": 7, "storage.data_dir": str(tmp_path)})
    limits = config.limits()
    assert set(limits) == set(LIMIT_KEYS)
    assert limits["call_timeout_s"] == 7.0
    assert limits["memory_mb"] == DEFAULTS["limits.memory_mb"]


def test_module_limit_overrides(tmp_path):
    config = load_config(None, {"storage.data_dir": str(tmp_path)})
    limits = config.limits({"call_timeout_s": 5, "memory_mb": 256})
    assert limits["call_timeout_s"] == 5.0 and type(limits["call_timeout_s"]) is float
    assert limits["memory_mb"] == 256
    assert limits["max_retries"] == DEFAULTS["limits.max_retries"]
    # the configuration itself is unchanged
    assert config["limits.call_timeout_s"] == DEFAULTS["limits.call_timeout_s"]
    assert config.limits()["memory_mb"] == DEFAULTS["limits.memory_mb"]


def test_unknown_module_limit_is_named(tmp_path):
    config = load_config(None, {"storage.data_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="'cpu_s'") as info:
        config.limits({"cpu_s": 1}, origin="mods/x/module.toml")
    assert "mods/x/module.toml" in str(info.value)


def test_ill_typed_module_limit_is_an_error(tmp_path):
    config = load_config(None, {"storage.data_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="memory_mb"):
        config.limits({"memory_mb": "lots"})


# -- documentation: conf/hostd.toml ------------------------------------------

def _documented_keys(lines):
    """:returns: ``{dotted key: index of its line}`` for every ``key = value`` line."""
    section, found = None, {}
    for index, line in enumerate(lines):
        stripped = line.strip()
        header = re.fullmatch(r"\[([A-Za-z0-9_.]+)\]", stripped)
        if header:
            section = header.group(1)
            continue
        assignment = re.match(r"([A-Za-z0-9_]+)\s*=", stripped)
        if assignment:  # before any section: a key of its own (peers)
            found[assignment.group(1) if section is None else f"{section}.{assignment.group(1)}"] = index
    return found


def _conf_value(data: dict, key: str):
    """:returns: a setting's value in the parsed conf (``KeyError`` if absent)."""
    section, _, name = key.partition(".")
    return data[section][name] if name else data[section]


def test_every_setting_is_documented_in_conf_with_its_default():
    data = tomllib.loads(CONF.read_text(encoding="utf-8"))
    lines = CONF.read_text(encoding="utf-8").splitlines()
    keys = _documented_keys(lines)
    for setting in SETTINGS:
        try:
            value = _conf_value(data, setting.key)
        except KeyError:
            raise AssertionError(f"{setting.key} missing from {CONF}") from None
        assert value == setting.default, f"{setting.key}: conf value is not the default"
        assert type(value) is type(setting.default), setting.key
        index = keys[setting.key]
        above = lines[index - 1].strip()
        assert above.startswith("#") and len(above.lstrip("# ")) > 0, \
            f"{setting.key} has no comment line right above it in {CONF}"


def test_every_key_in_conf_is_a_known_setting():
    data = tomllib.loads(CONF.read_text(encoding="utf-8"))
    known = {s.key for s in SETTINGS}
    seen = set()
    for section, table in data.items():
        if not isinstance(table, dict):
            seen.add(section)  # a setting without a section (peers)
            continue
        for name in table:
            seen.add(f"{section}.{name}")
    assert seen - known == set()
    assert seen == known
    # the line scan and tomllib agree
    assert set(_documented_keys(CONF.read_text(encoding="utf-8").splitlines())) == seen


def test_conf_loads_as_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(CONF).as_dict() == load_config().as_dict()


# -- the file store -------------------------------------------------------------

def test_file_store_backend_is_one_of_the_known(tmp_path):
    assert load_config(None, {"storage.data_dir": str(tmp_path)})["storage.fs"] == "local"
    path = write_toml(tmp_path, '[storage]\nfs = "gridfs"\n')
    assert load_config(path)["storage.fs"] == "gridfs"
    path = write_toml(tmp_path, '[storage]\nfs = "s3"\n')
    with pytest.raises(ConfigError, match=r"storage\.fs must be one of 'local', 'gridfs', got 's3'"):
        load_config(path)


def test_a_module_may_change_its_file_quota(tmp_path):
    config = load_config(None, {"storage.data_dir": str(tmp_path), "limits.fs_mb": 100})
    assert config.limits()["fs_mb"] == 100.0
    assert config.limits({"fs_mb": 5})["fs_mb"] == 5.0
    with pytest.raises(ConfigError, match="fs_mb"):
        config.limits({"fs_mb": "big"})


# -- auth ---------------------------------------------------------------------------

DIGEST = "ab" * 32


def test_tokens_are_checked_and_normalised(tmp_path):
    path = write_toml(tmp_path, f"""
        [auth]
        required = "always"

        [[auth.tokens]]
        name = "instructor-6002x"
        token_sha256 = "{DIGEST.upper()}"
        scopes = ["views", "queries"]
        allow = ["grades", "count"]
        fix = {{ course = "6.002x", limit = 3 }}

        [[auth.tokens]]
        name = "admin"
        token = "a-plain-token-of-enough-length"
        scopes = ["admin", "events:write"]
        default = "allow"
    """)
    config = load_config(path)
    assert config["auth.required"] == "always"
    instructor, admin = config["auth.tokens"]
    assert instructor == {"name": "instructor-6002x", "token_sha256": DIGEST, "scopes": ["queries", "views"],
                          "default": "deny", "allow": ["count", "grades"], "deny": [],
                          "fix": {"course": "6.002x", "limit": 3}}
    assert admin["token_sha256"] == hashlib.sha256(b"a-plain-token-of-enough-length").hexdigest()
    assert "token" not in admin  # the plain text goes no further (web workers get the settings)
    assert admin["default"] == "allow" and admin["fix"] == {}


@pytest.mark.parametrize("table, message", [
    (f'name = "a"\nscopes = ["views"]', r"auth\.tokens\[0\] \(a\) needs exactly one of token_sha256 and token"),
    (f'name = "a"\ntoken_sha256 = "{DIGEST}"\ntoken = "x" ', "exactly one"),
    (f'token_sha256 = "{DIGEST}"', r"auth\.tokens\[0\]\.name"),
    (f'name = "a b"\ntoken_sha256 = "{DIGEST}"', r"auth\.tokens\[0\]\.name"),
    ('name = "a"\ntoken_sha256 = "abc"', r"auth\.tokens\[0\]\.token_sha256 \(a\) must be 64 hex digits"),
    ('name = "a"\ntoken = "short"', r"auth\.tokens\[0\]\.token \(a\) must be a string of at least 16"),
    (f'name = "a"\ntoken_sha256 = "{DIGEST}"\nscopes = ["view"]', r"auth\.tokens\[0\]\.scopes \(a\): unknown scope\(s\) 'view'"),
    (f'name = "a"\ntoken_sha256 = "{DIGEST}"\nscopes = "views"', r"auth\.tokens\[0\]\.scopes must be a list"),
    (f'name = "a"\ntoken_sha256 = "{DIGEST}"\ndefault = "maybe"', r"auth\.tokens\[0\]\.default \(a\) must be 'allow' or 'deny'"),
    (f'name = "a"\ntoken_sha256 = "{DIGEST}"\nallow = [1]', r"auth\.tokens\[0\]\.allow must be a list of strings"),
    (f'name = "a"\ntoken_sha256 = "{DIGEST}"\nfix = {{ when = 1979-05-27 }}', r"auth\.tokens\[0\]\.fix\.when must be"),
    (f'name = "a"\ntoken_sha256 = "{DIGEST}"\nallowed = []', r"auth\.tokens\[0\]: unknown key\(s\) allowed"),
])
def test_a_malformed_token_is_named(tmp_path, table, message):
    path = write_toml(tmp_path, "[[auth.tokens]]\n" + table + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_two_tokens_may_share_neither_name_nor_token(tmp_path):
    same_name = f'[[auth.tokens]]\nname = "a"\ntoken_sha256 = "{DIGEST}"\n' \
                f'[[auth.tokens]]\nname = "a"\ntoken_sha256 = "{"cd" * 32}"\n'
    with pytest.raises(ConfigError, match=r"auth\.tokens\[1\] has the same name 'a' as \[0\]"):
        load_config(write_toml(tmp_path, same_name))
    same_token = f'[[auth.tokens]]\nname = "a"\ntoken_sha256 = "{DIGEST}"\n' \
                 f'[[auth.tokens]]\nname = "b"\ntoken_sha256 = "{DIGEST}"\n'
    with pytest.raises(ConfigError, match=r"auth\.tokens\[1\] has the same token as \[0\]"):
        load_config(write_toml(tmp_path, same_token))


def test_tokens_must_be_an_array_of_tables_and_required_one_of_three(tmp_path):
    with pytest.raises(ConfigError, match=r"auth\.tokens must be list"):
        load_config(write_toml(tmp_path, f'[auth.tokens]\nname = "a"\ntoken_sha256 = "{DIGEST}"\n'))
    with pytest.raises(ConfigError, match=r"auth\.required must be one of 'auto', 'always', 'never'"):
        load_config(write_toml(tmp_path, '[auth]\nrequired = "yes"\n'))


def test_every_key_of_a_token_table_is_documented_in_conf():
    text = CONF.read_text(encoding="utf-8")
    example = "\n".join(line.strip()[1:].strip() for line in text.splitlines()
                        if line.strip().startswith("#") and "=" in line)
    for key, meaning in TOKEN_FIELDS:
        assert re.search(rf"(?<!\w){key}\s*=", example), f"auth.tokens key {key!r} is not in {CONF}'s example"
        assert meaning.strip()
