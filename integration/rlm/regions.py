"""Address codes RLM insists on: 2-letter state codes and ISO alpha-3 countries."""
from __future__ import annotations

US_STATES = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "district of columbia": "DC",
    "florida": "FL", "georgia": "GA", "hawaii": "HI", "idaho": "ID", "illinois": "IL",
    "indiana": "IN", "iowa": "IA", "kansas": "KS", "kentucky": "KY", "louisiana": "LA",
    "maine": "ME", "maryland": "MD", "massachusetts": "MA", "michigan": "MI", "minnesota": "MN",
    "mississippi": "MS", "missouri": "MO", "montana": "MT", "nebraska": "NE", "nevada": "NV",
    "new hampshire": "NH", "new jersey": "NJ", "new mexico": "NM", "new york": "NY",
    "north carolina": "NC", "north dakota": "ND", "ohio": "OH", "oklahoma": "OK", "oregon": "OR",
    "pennsylvania": "PA", "rhode island": "RI", "south carolina": "SC", "south dakota": "SD",
    "tennessee": "TN", "texas": "TX", "utah": "UT", "vermont": "VT", "virginia": "VA",
    "washington": "WA", "west virginia": "WV", "wisconsin": "WI", "wyoming": "WY",
    "puerto rico": "PR", "guam": "GU", "virgin islands": "VI", "american samoa": "AS",
    "northern mariana islands": "MP", "armed forces americas": "AA", "armed forces europe": "AE",
    "armed forces pacific": "AP",
    # Canadian provinces share the field.
    "alberta": "AB", "british columbia": "BC", "manitoba": "MB", "new brunswick": "NB",
    "newfoundland and labrador": "NL", "nova scotia": "NS", "ontario": "ON",
    "prince edward island": "PE", "quebec": "QC", "saskatchewan": "SK",
    "northwest territories": "NT", "nunavut": "NU", "yukon": "YT",
}

COUNTRIES = {
    "US": "USA", "CA": "CAN", "GB": "GBR", "AU": "AUS", "NZ": "NZL", "MX": "MEX", "DE": "DEU",
    "FR": "FRA", "IE": "IRL", "NL": "NLD", "ES": "ESP", "IT": "ITA", "JP": "JPN", "PR": "PRI",
}


def state_code(state: str | None) -> str | None:
    """Loop sends the full state name; RLM rejects anything over 2 characters."""
    if not state or not isinstance(state, str):
        return None  # Loop's API has been seen to send odd types; RLM can do without a state
    text = state.strip()
    if len(text) <= 2:
        return text.upper()
    return US_STATES.get(text.lower())


def country_code3(code: str | None) -> str | None:
    if not code or not isinstance(code, str):
        return None
    code = code.strip().upper()
    return code if len(code) == 3 else COUNTRIES.get(code, code)
