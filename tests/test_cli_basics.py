from difffusr_cli import __version__
from difffusr_cli.bands import BAND_NAMES, BANDS, GROUPS, band, indices
from difffusr_cli.cli import main


def test_band_table_order_and_groups():
    assert BAND_NAMES == (
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B11",
        "B12",
    )
    assert [b.index for b in BANDS] == list(range(12))
    assert GROUPS["10m"] == ("B02", "B03", "B04", "B08")
    assert GROUPS["20m"] == ("B05", "B06", "B07", "B8A", "B11", "B12")
    assert GROUPS["60m"] == ("B01", "B09")
    assert band("b8a").ratio == 2 and band("B01").ratio == 6
    assert indices(["B04", "B03", "B02"]) == [3, 2, 1]


def test_version_and_usage_errors(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err
