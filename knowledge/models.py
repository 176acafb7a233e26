"""Knowledge tables: sources -> documents (with ACL principals) -> chunks (embedding, tsvector, ACL).

ACL principals: `public` (anyone in the workspace), `channel:<platform>:<id>` (members of that channel),
`user:<platform>:<id>`. A chunk carries its document's ACL so retrieval filters inside the SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from bot.models import Base, Json, now_column

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2; `ladder reindex` changes it together with the model


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # folder | slack_export | slack_channel | discord_channel | web
    config: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")
    platform: Mapped[str] = mapped_column(String(32), server_default="console")
    workspace: Mapped[str] = mapped_column(String(128), server_default="local")
    schedule: Mapped[str | None] = mapped_column(String(64))  # cron expression
    cursor: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")
    status: Mapped[str] = mapped_column(String(16), server_default="new")  # new | syncing | ok | error
    last_error: Mapped[str | None] = mapped_column(Text)
    errors: Mapped[list[Any]] = mapped_column(Json, server_default="[]")  # per-document problems of last sync
    stats: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")  # last sync report
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = now_column()


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("source_id", "external_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(512))
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    acl: Mapped[list[str]] = mapped_column(ARRAY(String(256)))
    meta: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")
    updated_at: Mapped[datetime] = now_column()


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_embedding_hnsw", "embedding", postgresql_using="hnsw",
              postgresql_with={"m": 16, "ef_construction": 64},
              postgresql_ops={"embedding": "vector_cosine_ops"}),
        Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
        Index("ix_chunks_acl", "acl", postgresql_using="gin"),
        Index("ix_chunks_content_hash", "content_hash"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ord: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str] = mapped_column(Text, server_default="")
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    tokens: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM))
    tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english'::regconfig, heading || ' ' || text)", persisted=True))
    acl: Mapped[list[str]] = mapped_column(ARRAY(String(256)))


class KnowledgeMeta(Base):
    """Key/value facts about the index, e.g. the embedding model and dimension it was built with."""

    __tablename__ = "knowledge_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")


class ChannelMember(Base):
    """Who is in which chat channel, as last fetched by a chat-channel source's sync (see knowledge.acl)."""

    __tablename__ = "channel_members"
    __table_args__ = (Index("ix_channel_members_platform_user", "platform", "user_id"),)

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    synced_at: Mapped[datetime] = now_column()


class MembershipSync(Base):
    """The outcome of the last membership fetch per channel: `ok=False` makes DM answers public-only."""

    __tablename__ = "membership_syncs"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(128), primary_key=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[datetime] = now_column()


class TermStat(Base):
    """BM25 document frequencies per ACL principal, so full-text scores only count what the audience reads."""

    __tablename__ = "term_stats"

    principal: Mapped[str] = mapped_column(String(256), primary_key=True)
    lexeme: Mapped[str] = mapped_column(Text, primary_key=True)
    df: Mapped[int] = mapped_column(Integer)


class PrincipalStat(Base):
    """Chunk count and total lexemes per principal: BM25's N and average length, and the ACL selectivity."""

    __tablename__ = "principal_stats"

    principal: Mapped[str] = mapped_column(String(256), primary_key=True)
    chunks: Mapped[int] = mapped_column(BigInteger)
    lexemes: Mapped[int] = mapped_column(BigInteger)
