"""Test data shared by several test modules (fixtures live in conftest.py)."""

# A valid new observation: no value is stored for its key in the seed.
NEW_OBSERVATION = {
    "city_code": "hangzhou",
    "indicator_code": "sei_va_share_gdp",
    "period": 2023,
    "value": 33.1,
    "value_text": "33.1%",
    "qualifier": "exact",
    "source_id": 1,
    "quote": "a made-up test quote",
}

# The header row of an observation import, in the export's column order.
IMPORT_HEADER = "city_code,indicator_code,unit_code,period,value,value_text,qualifier,is_derived,formula,derived_from,source_id,quote,note"
