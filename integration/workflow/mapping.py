"""Loop return → RLM return authorization (docs/rlm-api.md B.10)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from integration.rlm.regions import country_code3, state_code


def money(value) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else "0"))
    except InvalidOperation:
        return Decimal("0")


def parse_loop_time(value: str | None) -> datetime | None:
    """Loop timestamps come as ISO (webhooks) or naive `2023-08-22 14:08:31` (API): UTC either way."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def unit_from_loop(item: dict) -> dict:
    """The PII-free part of one Loop line item (one unit) that we keep."""
    return {
        "line_item_id": str(item.get("line_item_id")),
        "sku": (item.get("sku") or "").strip(),
        "barcode": str(item.get("barcode") or "").strip(),
        "title": item.get("title") or "",
        "price": str(money(item.get("price"))),
        "discount": str(money(item.get("discount"))),
        "return_reason": item.get("return_reason"),
        "parent_return_reason": item.get("parent_return_reason"),
    }


@dataclass
class UnitGroup:
    """Units of one SKU at one unit price: one RA line."""

    sku: str
    barcode: str
    title: str
    unit_price: Decimal
    units: list[dict] = field(default_factory=list)

    @property
    def qty(self) -> int:
        return len(self.units)


def group_units(units: list[dict]) -> list[UnitGroup]:
    """Loop has one line item per unit and no quantity: group units by SKU (and price)."""
    groups: dict[tuple[str, Decimal], UnitGroup] = {}
    for unit in units:
        price = money(unit["price"]) - money(unit.get("discount"))
        key = (unit["sku"] or unit["barcode"], price)
        group = groups.get(key)
        if group is None:
            group = groups[key] = UnitGroup(unit["sku"], unit["barcode"], unit["title"], price)
        group.units.append(unit)
    return list(groups.values())


def reason_for(group: UnitGroup, code_for: Callable[[str | None], str]) -> tuple[str, str]:
    """RLM reason code (most frequent among the units) and the Loop texts as the note."""
    reasons = Counter(u.get("return_reason") or "" for u in group.units)
    top = reasons.most_common(1)[0][0] if reasons else ""
    texts = []
    for unit in group.units:
        for text in (unit.get("return_reason"), unit.get("parent_return_reason")):
            if text and text not in texts:
                texts.append(text)
    return code_for(top), " / ".join(texts)[:250]


def sku_candidates(group: UnitGroup, sku_pattern: str) -> list[dict]:
    """Lookups to try, in order: barcode as UPC, SKU as UPC, then the SKU pattern's parts."""
    tries: list[dict] = []
    if group.barcode:
        tries.append({"upc": group.barcode})
    if group.sku and group.sku != group.barcode:
        tries.append({"upc": group.sku})
    parts = split_sku(group.sku, sku_pattern)
    if parts:
        tries.append(parts)
    return tries


def split_sku(sku: str, pattern: str) -> dict | None:
    """`CB11D10-BLUE-S` with pattern `{style}-{color}-{size}` → style/color/size."""
    names = [p.strip("{}") for p in pattern.split("-")]
    values = sku.split("-")
    if not sku or len(values) != len(names):
        return None
    mapped = dict(zip(names, values, strict=True))  # lengths checked above
    if {"style", "color", "size"} - mapped.keys():
        return None
    return {"style_number": mapped["style"], "color": mapped["color"], "size": mapped["size"]}


def item_fields(item: dict, group: UnitGroup) -> dict:
    """RA line fields from an RLM item record (style-colour matrix) for this group's size."""
    sku = _matching_sku(item, group)
    return {
        "upc": sku["upc"],
        "sku_number": item["sku_number"],
        "style_number": item["style_number"],
        "color": item["color"],
        "size": sku["size"],
        "division_number": item.get("division_number"),
    }


def _matching_sku(item: dict, group: UnitGroup) -> dict:
    skus = item.get("skus") or []
    for sku in skus:
        if sku.get("upc") and sku["upc"] in (group.barcode, group.sku):
            return sku
    parts = split_sku(group.sku, "{style}-{color}-{size}") or {}
    for sku in skus:
        if sku.get("size") == parts.get("size"):
            return sku
    if len(skus) == 1:
        return skus[0]
    raise LookupError(f"no size of {item.get('style_number')} matches {group.sku}")


def ra_date(created_at: str | None, tz: str) -> int:
    when = parse_loop_time(created_at) or datetime.now(UTC)
    return int(when.astimezone(ZoneInfo(tz)).strftime("%Y%m%d"))


def ship_from(address: dict | None) -> dict:
    address = address or {}
    out = {
        "name": address.get("name"),
        "address1": address.get("address1"),
        "address2": address.get("address2"),
        "city": address.get("city"),
        "state": state_code(address.get("state")),
        "zip": str(address["zip"]) if address.get("zip") not in (None, "") else None,
        "country_code": country_code3(address.get("country_code")),
    }
    return {k: v for k, v in out.items() if v not in (None, "")}


def rma_ref(merchant_name: str, loop_return_id: str) -> str:
    """The RA's `external_ref`, RLM's idempotency key (unique per company): the Loop return id
    scoped by merchant, as two merchants (two Loop shops) may share one RLM company and Loop ids
    are only unique within a shop."""
    return f"{merchant_name}:{loop_return_id}"


def build_ra(merchant, details: dict, lines: list[dict], ship_from_address: dict,
             external_ref: str | None = None) -> dict:
    """The create-RA body; `lines` are already resolved against RLM's catalog."""
    body = {
        "division_number": merchant.division_number,
        "warehouse_number": merchant.warehouse_number,
        "customer_number": merchant.customer_number,
        "customer_po": details.get("order_name"),
        "external_ref": external_ref or rma_ref(merchant.name, str(details["id"])),
        "external_source": "LOOP",
        "ra_date": ra_date(details.get("created_at"), merchant.timezone),
        "ship_from": ship_from_address,
        "lines": lines,
    }
    if merchant.store_number is not None:
        body["store_number"] = merchant.store_number
    carrier = (details.get("carrier") or "").strip()
    tracking = str(details.get("tracking_number") or "").strip()
    if carrier and carrier != "N/A":
        body["carrier"] = carrier
    if tracking and tracking not in ("N/A", "pending"):
        body["tracking_number"] = tracking
    return body


def ra_line(number: int, group: UnitGroup, resolved: dict, reason_code: str, reason_note: str) -> dict:
    line = {k: v for k, v in resolved.items() if k != "division_number"}
    line.update({
        "line_number": number,
        "description": group.title[:60] if group.title else None,
        "qty_authorized": group.qty,
        "unit_price": f"{group.unit_price:.2f}",
        "reason_code": reason_code,
        "reason_note": reason_note,
        "external_line_refs": [u["line_item_id"] for u in group.units],
    })
    return {k: v for k, v in line.items() if v is not None}
