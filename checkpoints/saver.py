"""The LangGraph checkpointer: AsyncSqliteSaver on a connection we configure ourselves
(WAL, synchronous=NORMAL, a busy timeout), one thread per seed."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver


def thread_id(run_id: str, seed_id: str) -> str:
    return f"{run_id}:{seed_id}"


@asynccontextmanager
async def open_saver(path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), timeout=30)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL survives a process crash
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        yield saver
    finally:
        await conn.close()


async def forget_thread(saver: AsyncSqliteSaver, thread: str) -> None:
    """A finished seed's outcome lives in the registry; its checkpoints are no longer needed."""
    await saver.adelete_thread(thread)
