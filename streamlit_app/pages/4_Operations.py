"""Streamers (the same Redis control as the CLI), pipeline lag, and dead letters."""

import datetime as dt
import time

import pandas as pd
import streamlit as st

from fraud_detection.beam_pipelines.stream import GROUP_ID
from fraud_detection.dashboard import require_page, settings, store
from fraud_detection.progress import read_progress
from fraud_detection.store import queries
from fraud_detection.store.streamer_state import StreamerState, StreamerStateError

require_page("Operations")
st.title("Operations")

st.subheader("Streamers")
try:
    state = StreamerState(settings())
    statuses = state.all()
except StreamerStateError as error:
    st.error(str(error))
    statuses, state = [], None
if statuses:
    st.dataframe(pd.DataFrame([{
        "name": s.name, "status": s.status, "command": s.command,
        "source": s.config.get("source"), "topic": s.config.get("topic"),
        "target tx/s": s.config.get("rate"), "rate tx/s": s.rate, "sent": s.sent,
        "last row": s.last_row, "last report": f"{time.time() - s.updated:.0f}s ago",
        "error": s.error} for s in statuses]), hide_index=True)
    name = st.selectbox("Streamer", [s.name for s in statuses], key="streamer")
    columns = st.columns(3)
    for column, (label, command) in zip(columns, (("Resume", "run"), ("Pause", "pause"),
                                                   ("Stop", "stop")), strict=True):
        if column.button(label, key=f"streamer-{command}"):
            state.command(name, command)
            st.success(f"{name}: asked to {command}.")
    st.caption("Start streamers with `python -m fraud_detection streamers start`.")
else:
    st.info("No streamers registered.")

st.subheader("Streaming pipeline")
try:
    progress = read_progress(settings(), GROUP_ID)
    columns = st.columns(3)
    columns[0].metric("Lag (sent, not yet stored)", f"{progress.lag:,}",
                      help="messages in the transactions topic whose rows are not all in "
                           "Cassandra yet: the pipeline commits offsets only past stored rows")
    columns[1].metric("Stored per second", "not reporting" if progress.stored_per_second is None
                      else f"{progress.stored_per_second:,.1f}",
                      help="as the running pipeline measured it over its last 10 s")
    columns[2].metric("Stored / sent", f"{progress.stored:,} / {progress.sent:,}")
    if progress.lost:
        st.error(f"The broker deleted {progress.lost:,} messages before they were stored: "
                 "check the topic's retention.")
    st.dataframe(pd.DataFrame([{"partition": p.partition, "log start": p.start, "end": p.end,
                                "stored through": p.stored_through, "lag": p.lag}
                               for p in progress.partitions]), hide_index=True)
except Exception as error:  # Kafka down or the topic not there yet: say so, keep the page
    st.warning(f"Kafka: {error}")

st.subheader("Dead letters")
source = st.text_input("Source", value=f"kafka:{settings().topic_transactions}", key="source")
day = st.date_input("Day received", value=dt.date.today(), key="dead_day")
letters = queries.dead_letters_on(store(), source, day, 100).items
st.dataframe(pd.DataFrame([{"received": d.received_at, "reason": d.letter.reason,
                            "raw": d.letter.raw[:200]} for d in letters],
                          columns=["received", "reason", "raw"]), hide_index=True)
