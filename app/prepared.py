"""Hot reads as prepared statements: each query shape is built and compiled by SQLAlchemy
once, then run straight on the driver's cursor with fresh parameters.

Building a Core statement, computing its cache key, setting up an execution context and
wrapping every row costs about 3 ms a request; the SQL itself costs about 0.3 ms (see
docs/performance.md). The statements stay SQLAlchemy constructs, so one definition serves
SQLite and PostgreSQL alike.
"""

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Dialect, Select, bindparam
from sqlmodel import Session

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Prepared:
    """A compiled statement: its SQL, how to lay out its parameters, and its column names."""

    sql: str
    positions: tuple[str, ...] | None  # parameter names in order, for `?`-style drivers
    constants: dict[str, Any]  # values of the literals the statement binds itself
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]  # driver conversions, e.g. datetimes
    columns: tuple[str, ...]
    booleans: tuple[int, ...]  # columns SQLite returns as 0/1

    @classmethod
    def compile(cls, stmt: Select[Any], dialect: Dialect) -> "Prepared":
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        binds = []
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds.append((name, process))
        columns = list(stmt.selected_columns)
        return cls(
            sql=compiled.string,
            constants=compiled.params,
            positions=tuple(str(n) for n in compiled.positiontup or ())
            if dialect.positional
            else None,
            binds=tuple(binds),
            columns=tuple(str(c.key) for c in columns),
            booleans=tuple(i for i, c in enumerate(columns) if isinstance(c.type, Boolean)),
        )

    def arguments(self, params: Mapping[str, Any]) -> Any:
        """What the driver takes for `params`: a list in order for `?`, else a dict."""
        values = {**self.constants, **params}
        for name, process in self.binds:
            values[name] = process(values[name])
        return values if self.positions is None else [values[n] for n in self.positions]

    def rows(self, cursor: Any, params: Mapping[str, Any]) -> list[Row]:
        """Runs on a DBAPI cursor; every bound name the statement uses must be in `params`."""
        cursor.execute(self.sql, self.arguments(params))
        rows: list[Row] = cursor.fetchall()
        if self.booleans:
            rows = [self._booleans(r) for r in rows]
        return rows

    def dicts(self, cursor: Any, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Rows as dicts by column name (booleans set right in each dict, not by copying rows)."""
        cursor.execute(self.sql, self.arguments(params))
        dicts = [dict(zip(self.columns, r, strict=True)) for r in cursor.fetchall()]
        for i in self.booleans:
            name = self.columns[i]
            for d in dicts:
                if d[name] is not None:
                    d[name] = bool(d[name])
        return dicts

    def batches(self, cursor: Any, params: Mapping[str, Any], size: int) -> Iterator[list[Row]]:
        """The result `size` rows at a time, for exports that must not hold it all."""
        cursor.execute(self.sql, self.arguments(params))
        while batch := cursor.fetchmany(size):
            yield batch if not self.booleans else [self._booleans(r) for r in batch]

    def _booleans(self, row: Row) -> Row:
        values = list(row)
        for i in self.booleans:
            if values[i] is not None:
                values[i] = bool(values[i])
        return tuple(values)


Builder = Callable[..., Select[Any]]


def one_of(column: Any, name: str, values: Sequence[Any], type_: Any = None) -> ColumnElement[bool]:
    """`column IN (:name_0, :name_1, ...)`, one parameter per value, so a shape's SQL is the
    same whatever the values. The values are bound for plain SQLAlchemy execution; a prepared
    statement takes fresh ones from `values_of(name, values)`."""
    params = (bindparam(f"{name}_{i}", v, type_=type_) for i, v in enumerate(values))
    return column.in_(params)  # type: ignore[no-any-return]


def values_of(name: str, values: Iterable[Any]) -> dict[str, Any]:
    """The parameters for `one_of(column, name, ...)`."""
    return {f"{name}_{i}": v for i, v in enumerate(values)}


@lru_cache(maxsize=2048)
def prepared(dialect: Dialect, build: Builder, shape: tuple[Hashable, ...]) -> Prepared:
    """`build(*shape)` compiled for `dialect`, once per shape. A shape is whatever changes the
    SQL text (how many codes a filter has, whether there is a cursor), never a value."""
    return Prepared.compile(build(*shape), dialect)


@dataclass(frozen=True)
class Reader:
    """A driver cursor inside a read transaction, and the dialect its SQL is compiled for."""

    cursor: Any
    dialect: Dialect

    @classmethod
    def of(cls, session: Session) -> "Reader":
        """The cursor of a session's own connection, inside the session's transaction."""
        connection = session.connection()
        return cls(connection.connection.cursor(), connection.dialect)

    def stream_cursor(self) -> Any:
        """A second cursor on the same connection and transaction, for a long result read in
        batches: server-side on PostgreSQL, so the whole result never sits in memory."""
        connection = self.cursor.connection
        if self.dialect.name == "postgresql":
            return connection.cursor(name="xinzhi_export")
        return connection.cursor()

    def rows(
        self, build: Builder, shape: tuple[Hashable, ...], params: Mapping[str, Any]
    ) -> list[Row]:
        return prepared(self.dialect, build, shape).rows(self.cursor, params)

    def dicts(
        self, build: Builder, shape: tuple[Hashable, ...], params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return prepared(self.dialect, build, shape).dicts(self.cursor, params)
