"""Configuration: defaults from the market rules; a bad key is a clear error at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.config import Config, ConfigError, load_config, parse_config
from exchange.model import InstrumentKind, SelfTradePolicy


def test_defaults_follow_the_market_rules() -> None:
    config = load_config(None)
    assert config.market.stp == SelfTradePolicy.CANCEL_NEWEST
    instruments = {i.symbol: i for i in config.listed_instruments()}
    assert sorted(instruments) == ["CCER", "CEA-2024", "CEA-2025"]
    cea = instruments["CEA-2025"]
    assert (cea.kind, cea.vintage, cea.tick_fen, cea.lot_t, cea.max_order_qty_t, cea.band_bps) == (
        InstrumentKind.ALLOWANCE, 2025, 1, 1, 99_999, 1_000,
    )


def test_a_file_overrides_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "exchange.toml"
    path.write_text(
        '[market]\nself_trade_policy = "cancel_both"\n'
        '[engine]\nfsync = "every_command"\n'
        '[[instruments]]\nsymbol = "CEA-2026"\nkind = "allowance"\nvintage = 2026\nreference_price = "60.05"\ntick = "0.05"\n'
    )
    config = load_config(path)
    assert config.market.stp == SelfTradePolicy.CANCEL_BOTH
    assert config.engine.fsync == "every_command"
    [instrument] = config.listed_instruments()
    assert (instrument.symbol, instrument.reference_price_fen, instrument.tick_fen) == ("CEA-2026", 6_005, 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[market]\nself_trade_policy = 'cancel_all'\n", "$.market.self_trade_policy"),
        ("[market]\nunknown = 1\n", "unknown field `unknown`"),
        ("[engine]\nfsync_batch_records = 'many'\n", "$.engine.fsync_batch_records"),
        ("[engine]\nfsync_batch_records = 0\n", "$.engine.fsync_batch_records"),
        ("[[instruments]]\nsymbol = 'CEA-2025'\nkind = 'allowance'\n", "reference_price"),
        ("[[instruments]]\nsymbol='X'\nkind='ccer'\nreference_price='1.234'\n", "more than two decimal places"),
        ("[[instruments]]\nsymbol='CEA-2030'\nkind='allowance'\nreference_price='1.00'\n", "needs its vintage"),
        ("[[instruments]]\nsymbol='X'\nkind='ccer'\nreference_price='1.01'\ntick='0.02'\n", "not a multiple of tick"),
        (
            "[[instruments]]\nsymbol='X'\nkind='ccer'\nreference_price='1'\n[[instruments]]\nsymbol='X'\nkind='ccer'\nreference_price='2'\n",
            "listed twice: X",
        ),
        ("instruments = []\n", "no instruments"),
        ("[market\n", "line 1, column 8"),
    ],
)
def test_bad_configuration_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text)
    assert message in str(error.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_defaults_are_a_config() -> None:
    assert isinstance(Config(), Config)
