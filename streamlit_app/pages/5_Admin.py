"""Add a bank, user or account (checked as the CLI checks them); view and edit rules."""

import datetime as dt

import streamlit as st
import yaml

from fraud_detection.dashboard import require_page, store
from fraud_detection.records import ENTITY_FIELDS, validate_entity
from fraud_detection.store.entities import EntityRejected, add_entity
from fraud_detection.store.rules import save_rules, set_paused, stored_rules
from fraud_detection.transforms.rules import RuleError, parse_rules

require_page("Admin")
st.title("Admin")

st.subheader("Add an entity")
kind = st.selectbox("Kind", ["bank", "user", "account"], key="kind")
with st.form(f"add-{kind}"):
    values = {}
    for field in ENTITY_FIELDS[kind]:
        values[field] = st.text_input(field.replace("_", " "), key=f"{kind}-{field}",
                                      help="ISO-8601 time; empty: now"
                                      if field.endswith("_at") else None)
    if st.form_submit_button(f"Add {kind}"):
        raw = {k: v for k, v in values.items() if v}
        for field in ENTITY_FIELDS[kind]:
            if field.endswith("_at") and field not in raw:
                raw[field] = dt.datetime.now(dt.UTC).isoformat()
        entity, errors = validate_entity(kind, raw)
        if errors:
            st.error("; ".join(errors))
        else:
            try:
                add_entity(store(), entity)
                st.success(f"added {kind} {raw.get(f'{kind}_id')}")
            except EntityRejected as error:
                st.error(str(error))

st.subheader("Rules")
rules = []
try:
    rules = stored_rules(store())
except RuleError as error:
    st.info(str(error))
for rule in rules:
    cols = st.columns([3, 1, 1])
    cols[0].write(f"**{rule.rule_id}** ({rule.weight:.2f}) {rule.description}"
                  + (" · paused" if rule.paused else ""))
    if cols[1].button("Resume" if rule.paused else "Pause", key=f"pause-{rule.rule_id}"):
        set_paused(store(), rule.rule_id, not rule.paused)
        st.rerun()
if rules:
    chosen = st.selectbox("Edit rule", [r.rule_id for r in rules], key="edit_rule")
    rule = next(r for r in rules if r.rule_id == chosen)
    text = st.text_area("Definition (YAML)", key=f"yaml-{chosen}", height=220,
                        value=yaml.safe_dump({"id": rule.rule_id,
                                              "description": rule.description,
                                              "when": rule.when, "weight": rule.weight},
                                             sort_keys=False))
    if st.button("Save rule", key="save_rule"):
        try:
            changed = parse_rules({"rules": [yaml.safe_load(text)]}, "edited rule")
            save_rules(store(), changed)
            st.success(f"saved {changed[0].rule_id}; detection picks it up within its "
                       "refresh interval")
        except (RuleError, yaml.YAMLError, AttributeError, TypeError) as error:
            st.error(f"not saved: {error}")
