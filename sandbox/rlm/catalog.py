"""Seed reference data for the RLM sandbox: divisions, warehouses, reason codes and a small catalog.

Items are in RLM's style-colour matrix form (one record per style + colour, position-aligned sizes
and UPCs). `CB11D10` BLUE S carries the example UPC of docs/rlm-api.md A.3, `099999000054`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

DIVISIONS = [
    {"division_number": 10, "name": "Apparel"},
    {"division_number": 20, "name": "Accessories"},
]

WAREHOUSES = [
    {"warehouse_number": 1, "name": "Returns 3PL - Reno", "is_3pl": True, "accepts_returns": True},
    {"warehouse_number": 2, "name": "Main DC - Secaucus", "is_3pl": False, "accepts_returns": False},
]

REASON_CODES = [
    {"code": "TOO_SMALL", "description": "Too small", "default_disposition": "RESTOCK", "active": True},
    {"code": "TOO_LARGE", "description": "Too large", "default_disposition": "RESTOCK", "active": True},
    {"code": "DEFECTIVE", "description": "Defective", "default_disposition": "SECONDS", "active": True},
    {"code": "NOT_AS_DESCRIBED", "description": "Not as described", "default_disposition": "RESTOCK",
     "active": True},
    {"code": "CHANGED_MIND", "description": "Changed mind", "default_disposition": "RESTOCK", "active": True},
    {"code": "WRONG_ITEM", "description": "Wrong item sent", "default_disposition": "RESTOCK", "active": True},
    {"code": "OTHER", "description": "Other", "default_disposition": "RESTOCK", "active": True},
]

# (division, season code, season year, sku_number, style, style name, [(colour, description)], sizes)
_STYLES = [
    (10, "P", "24", 4, "CB11D10", "Chambray Button-Down", [("BLUE", "Chambray Blue"), ("RED", "Brick Red")],
     ["S", "M", "L"]),
    (10, "P", "24", 7, "KT200", "Merino Crew Sweater", [("NAVY", "Navy"), ("GREY", "Heather Grey")],
     ["XS", "S", "M", "L", "XL"]),
    (10, "P", "24", 9, "PT310", "Slim Chino", [("KHAKI", "Khaki")], ["28", "30", "32", "34"]),
    (10, "F", "24", 12, "DR450", "Wrap Dress", [("BLACK", "Black")], ["XS", "S", "M"]),
    (20, "P", "24", 21, "AC900", "Leather Belt", [("BROWN", "Cognac Brown")], ["M", "L"]),
]
_FIRST_UPC = 99999000054  # 099999000054 as in docs/rlm-api.md A.3, then sequential


def _build_items() -> list[dict]:
    items, upc = [], _FIRST_UPC
    for division, season, year, sku_number, style, name, colours, sizes in _STYLES:
        for colour, colour_description in colours:
            skus = []
            for size in sizes:
                skus.append({"size": size, "upc": f"{upc:012d}"})
                upc += 1
            items.append({
                "division_number": division, "season_code": season, "season_year": year,
                "sku_number": sku_number, "style_number": style, "style_name": name,
                "color": colour, "color_description": colour_description,
                "sizes": list(sizes), "skus": skus,
            })
    return items


ITEMS = _build_items()


@dataclass(frozen=True)
class Sku:
    """One sellable unit (style + colour + size), flattened from the matrix for lookups."""

    division_number: int
    season_year: str
    sku_number: int
    style_number: str
    style_name: str
    color: str
    size: str
    upc: str

    @property
    def description(self) -> str:
        return f"{self.style_name} {self.color} {self.size}"


class Catalog:
    """Read-only lookups over the item matrix."""

    def __init__(self, items: list[dict]):
        self.items = copy.deepcopy(items)
        self.skus = [
            Sku(item["division_number"], item["season_year"], item["sku_number"], item["style_number"],
                item["style_name"], item["color"], sku["size"], sku["upc"])
            for item in self.items for sku in item["skus"]
        ]
        self._by_upc = {sku.upc: sku for sku in self.skus}

    def by_upc(self, upc: str) -> Sku | None:
        return self._by_upc.get(upc)

    def style_of_sku_number(self, sku_number: int) -> str | None:
        return next((s.style_number for s in self.skus if s.sku_number == sku_number), None)

    def has_style(self, style_number: str) -> bool:
        return any(s.style_number == style_number for s in self.skus)

    def has_colour(self, style_number: str, color: str) -> bool:
        return any(s.style_number == style_number and s.color == color for s in self.skus)

    def find(self, style_number: str, color: str, size: str) -> Sku | None:
        return next((s for s in self.skus
                     if (s.style_number, s.color, s.size) == (style_number, color, size)), None)

    def other_size(self, sku: Sku) -> Sku:
        """Another size of the same style (same colour if possible): the classic wrong-item return."""
        same_style = [s for s in self.skus if s.style_number == sku.style_number and s.size != sku.size]
        return next((s for s in same_style if s.color == sku.color), same_style[0])

    def search(self, upc: str | None = None, style_number: str | None = None, color: str | None = None,
               size: str | None = None) -> list[dict]:
        """Item records matching the filters; `upc`/`size` narrow a record to the matching sizes."""
        if upc is not None:
            sku = self.by_upc(upc)
            if sku is None:
                return []
            style_number, color, size = sku.style_number, sku.color, sku.size
        found = []
        for item in self.items:
            if style_number is not None and item["style_number"] != style_number:
                continue
            if color is not None and item["color"] != color:
                continue
            if size is not None:
                if size not in item["sizes"]:
                    continue
                item = {**item, "sizes": [size], "skus": [s for s in item["skus"] if s["size"] == size]}
            found.append(copy.deepcopy(item))
        return found
