"""A store URL an app starts with: malformed or unopenable is StoreOpenError,
naming the URL and the fix; the stand-in store answers every read with 503."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aqnt_auth import (
    Authenticator,
    ConfigurationError,
    KeyFormat,
    MemoryKeyStore,
    StoreOpenError,
    StoreUnavailable,
    open_store,
)
from aqnt_auth._stores._open import UnopenedStore, open_store_to_serve
from tests import bodies


class TestStoreOpenError:
    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("keys.db", "cannot open the key store keys.db: store URL 'keys.db' has no scheme "
                        "(try sqlite:///aqnt_keys.db)"),
            ("redis://cache", "cannot open the key store redis://cache: unknown store URL "
                              "scheme 'redis'"),
            ("sqlite://keys.db", "cannot open the key store sqlite://keys.db: SQLite URLs look "
                                 "like sqlite:///relative.db or sqlite:////absolute/path.db"),
        ],
    )
    def test_malformed(self, url: str, message: str) -> None:
        with pytest.raises(StoreOpenError) as info:
            Authenticator(url)
        assert str(info.value) == message

    def test_missing_directory_is_named(self, tmp_path: Path) -> None:
        """SQLite alone would say "unable to open database file"."""
        url = f"sqlite:///{tmp_path}/nodir/keys.db"
        with pytest.raises(StoreOpenError) as info:
            Authenticator(url)
        assert str(info.value) == (
            f"cannot open the key store {url}: the directory '{tmp_path}/nodir' does not "
            "exist: create it, or fix the path"
        )
        assert not (tmp_path / "nodir").exists()

    def test_relative_path_is_shown_absolute(self, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
        """The message names the file the working directory makes of it."""
        monkeypatch.chdir(tmp_path)
        with pytest.raises(StoreOpenError, match=f"store sqlite:///{tmp_path}/nodir/k.db:"):
            Authenticator("sqlite:///nodir/k.db")

    def test_password_redacted(self) -> None:
        with pytest.raises(StoreOpenError) as info:
            Authenticator("nosuch://app:s3cret@db.internal/app")
        assert "s3cret" not in str(info.value)
        assert "nosuch://app:***@db.internal/app" in str(info.value)

    def test_is_a_configuration_error(self) -> None:
        """Code that caught ConfigurationError at construction still does."""
        assert issubclass(StoreOpenError, ConfigurationError)
        with pytest.raises(ConfigurationError):
            Authenticator("bogus")

    def test_open_store_itself_unchanged(self, tmp_path: Path) -> None:
        """open_store keeps its own errors; the wrapping is for starting apps."""
        with pytest.raises(ConfigurationError) as info:
            open_store(f"sqlite:///{tmp_path}/nodir/keys.db")
        assert not isinstance(info.value, StoreOpenError)

    def test_store_objects_pass_through(self) -> None:
        store = MemoryKeyStore()
        assert open_store_to_serve(store) is store

    def test_existing_directory_is_fine(self, tmp_path: Path) -> None:
        with Authenticator(f"sqlite:///{tmp_path}/keys.db"):
            assert os.path.exists(tmp_path / "keys.db")


class TestUnopenedStore:
    def test_every_read_is_503(self) -> None:
        error = StoreOpenError("cannot open the key store bogus: no scheme")
        store = UnopenedStore(error)
        with pytest.raises(StoreUnavailable) as info:
            store.get("3tHq0kR9xA2b")
        assert str(info.value) == str(error)
        assert "bogus" in repr(store)

    @pytest.mark.anyio
    async def test_authenticator_on_it_never_accepts(self, keys_for_unopened: str) -> None:
        auth = Authenticator(UnopenedStore(StoreOpenError("x")), rate_limit=None)
        with pytest.raises(StoreUnavailable) as info:
            auth.authenticate(f"Bearer {keys_for_unopened}")
        assert auth.render_error(info.value).body == bodies.UNAVAILABLE
        with pytest.raises(StoreUnavailable):
            await auth.authenticate_async(f"Bearer {keys_for_unopened}")


@pytest.fixture
def keys_for_unopened() -> str:
    """A well-formed key (valid checksum) that no store holds."""
    return KeyFormat().generate("live").raw
