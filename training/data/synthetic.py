"""The embedded default data set: a deterministic synthetic home-goods catalogue, written for Sift.

Titles combine a made-up brand, attributes and a head noun of the leaf category, with an optional feature and
colour. Sibling categories share nouns and attributes on purpose ("chair" in accent, dining and patio chairs;
"rug" in area and outdoor rugs), so intent is never decidable from one word alone.
"""

from __future__ import annotations

import random

from training.data.catalogue import Catalogue, Product

# leaf path -> (head nouns, category attributes, "with ..." features)
TAXONOMY: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "Furniture > Living Room Seating > Accent Chairs": (
        ("Accent Chair", "Armchair", "Club Chair", "Wingback Chair", "Slipper Chair"),
        ("Velvet", "Upholstered", "Mid-Century", "Tufted", "Swivel", "Boucle"),
        ("Ottoman", "Wooden Legs", "Throw Pillow"),
    ),
    "Furniture > Living Room Seating > Sofas": (
        ("Sofa", "Loveseat", "Couch", "Sectional Sofa", "Sleeper Sofa"),
        ("Velvet", "Linen", "Leather", "Modular", "Reclining", "3-Seater"),
        ("Chaise", "Storage", "Cup Holders"),
    ),
    "Furniture > Living Room Seating > Recliners": (
        ("Recliner", "Power Recliner", "Rocker Recliner", "Lift Chair"),
        ("Leather", "Massage", "Wall-Hugger", "Oversized", "Swivel"),
        ("Heat and Massage", "USB Port", "Cup Holders"),
    ),
    "Furniture > Tables > Coffee Tables": (
        ("Coffee Table", "Cocktail Table", "Lift-Top Coffee Table"),
        ("Oak", "Walnut", "Marble", "Glass", "Round", "Rectangular", "Rustic"),
        ("Storage Shelf", "Drawers", "Hidden Compartment"),
    ),
    "Furniture > Tables > Dining Tables": (
        ("Dining Table", "Kitchen Table", "Extendable Dining Table", "Pedestal Table"),
        ("Oak", "Walnut", "Marble", "Farmhouse", "Round", "Rectangular", "Solid Wood"),
        ("Leaf Extension", "Bench", "Trestle Base"),
    ),
    "Furniture > Tables > End Tables": (
        ("End Table", "Side Table", "Nightstand Table", "C Table"),
        ("Oak", "Glass", "Metal", "Round", "Rustic", "Marble"),
        ("Charging Station", "Drawer", "Storage Shelf"),
    ),
    "Furniture > Dining Seating > Dining Chairs": (
        ("Dining Chair", "Side Chair", "Kitchen Chair", "Parsons Chair"),
        ("Upholstered", "Solid Wood", "Farmhouse", "Mid-Century", "Windsor", "Velvet"),
        ("Set of 2", "Set of 4", "Arms"),
    ),
    "Furniture > Dining Seating > Bar Stools": (
        ("Bar Stool", "Counter Stool", "Swivel Bar Stool"),
        ("Counter Height", "Bar Height", "Adjustable", "Metal", "Backless", "Leather"),
        ("Footrest", "Back", "Set of 2"),
    ),
    "Furniture > Bedroom > Beds": (
        ("Platform Bed", "Bed Frame", "Canopy Bed", "Sleigh Bed", "Storage Bed"),
        ("Queen", "King", "Full", "Twin", "Upholstered", "Solid Wood", "Metal"),
        ("Headboard", "Drawers", "Slats"),
    ),
    "Furniture > Bedroom > Dressers": (
        ("Dresser", "Chest of Drawers", "Double Dresser", "Tallboy"),
        ("6-Drawer", "5-Drawer", "Oak", "Walnut", "Modern", "Farmhouse"),
        ("Mirror", "Soft-Close Drawers", "Metal Handles"),
    ),
    "Furniture > Bedroom > Nightstands": (
        ("Nightstand", "Bedside Table", "Night Table"),
        ("2-Drawer", "Oak", "Walnut", "Floating", "Modern", "Rustic"),
        ("Charging Station", "Drawer", "Open Shelf"),
    ),
    "Furniture > Office > Desks": (
        ("Desk", "Writing Desk", "Computer Desk", "Standing Desk", "L-Shaped Desk"),
        ("Oak", "Walnut", "Adjustable", "Metal", "Corner", "Modern"),
        ("Drawers", "Keyboard Tray", "Hutch"),
    ),
    "Furniture > Office > Office Chairs": (
        ("Office Chair", "Desk Chair", "Task Chair", "Executive Chair", "Gaming Chair"),
        ("Ergonomic", "Mesh", "Leather", "Swivel", "High-Back", "Adjustable"),
        ("Lumbar Support", "Headrest", "Armrests"),
    ),
    "Furniture > Storage > Bookcases": (
        ("Bookcase", "Bookshelf", "Etagere", "Ladder Shelf", "Cube Storage"),
        ("5-Shelf", "Oak", "Metal", "Industrial", "Corner", "Tall"),
        ("Doors", "Drawers", "Adjustable Shelves"),
    ),
    "Furniture > Storage > TV Stands": (
        ("TV Stand", "Media Console", "Entertainment Center", "Media Cabinet"),
        ("Oak", "Walnut", "Farmhouse", "Modern", "Floating", "Corner"),
        ("Fireplace", "Cable Management", "Sliding Doors"),
    ),
    "Rugs > Area Rugs": (
        ("Area Rug", "Rug", "Runner Rug", "Round Rug"),
        ("Wool", "Shag", "Oriental", "Geometric", "Abstract", "Hand-Tufted", "Machine Washable"),
        ("Non-Slip Backing", "Fringe", "Rug Pad"),
    ),
    "Rugs > Outdoor Rugs": (
        ("Outdoor Rug", "Patio Rug", "Indoor/Outdoor Rug", "Rug"),
        ("Polypropylene", "Geometric", "Striped", "Weather-Resistant", "Reversible", "Jute-Look"),
        ("UV Protection", "Fade Resistance", "Non-Slip Backing"),
    ),
    "Rugs > Bath Mats": (
        ("Bath Mat", "Bath Rug", "Shower Mat", "Memory Foam Mat"),
        ("Cotton", "Chenille", "Non-Slip", "Absorbent", "Quick-Dry", "Plush"),
        ("Non-Slip Backing", "Set of 2", "Contour Rug"),
    ),
    "Lighting > Ceiling Lights > Chandeliers": (
        ("Chandelier", "Crystal Chandelier", "Sputnik Chandelier", "Candle Chandelier"),
        ("6-Light", "8-Light", "Crystal", "Farmhouse", "Brass", "Black", "Modern"),
        ("Adjustable Chain", "Dimmable", "Glass Shades"),
    ),
    "Lighting > Ceiling Lights > Pendant Lights": (
        ("Pendant Light", "Pendant", "Kitchen Island Light", "Mini Pendant"),
        ("1-Light", "3-Light", "Glass", "Brass", "Industrial", "Dome", "Black"),
        ("Adjustable Cord", "Dimmable", "Glass Shade"),
    ),
    "Lighting > Ceiling Lights > Flush Mount Lights": (
        ("Flush Mount Light", "Ceiling Light", "Semi-Flush Mount", "Ceiling Fixture"),
        ("LED", "Drum", "Glass", "Brushed Nickel", "Black", "Modern"),
        ("Dimmable", "Frosted Shade", "Remote Control"),
    ),
    "Lighting > Lamps > Table Lamps": (
        ("Table Lamp", "Desk Lamp", "Bedside Lamp", "Buffet Lamp", "Lamp"),
        ("Ceramic", "Brass", "Glass", "Set of 2", "Touch", "Modern"),
        ("USB Port", "Linen Shade", "Dimmer"),
    ),
    "Lighting > Lamps > Floor Lamps": (
        ("Floor Lamp", "Arc Floor Lamp", "Tripod Floor Lamp", "Torchiere", "Lamp"),
        ("Brass", "Black", "LED", "Tall", "Modern", "Adjustable"),
        ("Shelves", "Reading Light", "Linen Shade"),
    ),
    "Lighting > Outdoor Lighting": (
        ("Outdoor Wall Light", "Porch Light", "Path Light", "String Lights", "Solar Light"),
        ("Solar", "LED", "Weatherproof", "Motion Sensor", "Black", "Bronze"),
        ("Dusk to Dawn Sensor", "Seeded Glass", "Remote Control"),
    ),
    "Bedding > Duvet Covers": (
        ("Duvet Cover", "Duvet Cover Set", "Comforter Cover"),
        ("Queen", "King", "Twin", "Cotton", "Linen", "Percale", "Striped"),
        ("Pillow Shams", "Button Closure", "Corner Ties"),
    ),
    "Bedding > Sheets": (
        ("Sheet Set", "Fitted Sheet", "Flat Sheet", "Bed Sheets"),
        ("Queen", "King", "Twin", "Cotton", "Linen", "Percale", "Bamboo", "400 Thread Count"),
        ("Deep Pockets", "Pillowcases", "Elastic All Around"),
    ),
    "Bedding > Comforters": (
        ("Comforter", "Down Alternative Comforter", "Quilt", "Comforter Set"),
        ("Queen", "King", "Twin", "Cotton", "All-Season", "Lightweight", "Quilted"),
        ("Pillow Shams", "Corner Tabs", "Sheet Set"),
    ),
    "Bedding > Pillows": (
        ("Bed Pillow", "Pillow", "Memory Foam Pillow", "Body Pillow"),
        ("Down", "Down Alternative", "Memory Foam", "Cooling", "Firm", "Soft", "Set of 2"),
        ("Removable Cover", "Adjustable Fill", "Cooling Gel"),
    ),
    "Decor > Wall Art": (
        ("Wall Art", "Canvas Print", "Framed Print", "Wall Decor", "Poster"),
        ("Abstract", "Botanical", "Landscape", "Coastal", "Black and White", "Set of 3"),
        ("Frame", "Mat", "Gallery Wrap"),
    ),
    "Decor > Mirrors": (
        ("Wall Mirror", "Floor Mirror", "Vanity Mirror", "Round Mirror", "Mirror"),
        ("Round", "Arched", "Full Length", "Gold", "Black", "Beveled", "Frameless"),
        ("Metal Frame", "Wood Frame", "Stand"),
    ),
    "Decor > Throw Pillows": (
        ("Throw Pillow", "Pillow Cover", "Lumbar Pillow", "Decorative Pillow", "Pillow"),
        ("Velvet", "Linen", "Boho", "Striped", "Set of 2", "Outdoor"),
        ("Insert", "Tassels", "Hidden Zipper"),
    ),
    "Decor > Clocks": (
        ("Wall Clock", "Mantel Clock", "Desk Clock", "Clock"),
        ("Silent", "Oversized", "Farmhouse", "Modern", "Gold", "Black"),
        ("Roman Numerals", "Pendulum", "Non-Ticking Movement"),
    ),
    "Decor > Vases": (
        ("Vase", "Flower Vase", "Bud Vase", "Floor Vase"),
        ("Ceramic", "Glass", "Terracotta", "Set of 3", "Tall", "White"),
        ("Faux Flowers", "Matte Finish", "Ribbed Texture"),
    ),
    "Kids > Kids Wall Decor": (
        ("Kids Wall Art", "Nursery Wall Art", "Wall Decal", "Growth Chart", "Wall Art"),
        ("Animal", "Rainbow", "Alphabet", "Safari", "Set of 3", "Woodland"),
        ("Frame", "Peel and Stick", "Name Personalization"),
    ),
    "Kids > Kids Beds": (
        ("Bunk Bed", "Loft Bed", "Toddler Bed", "Kids Bed", "Trundle Bed"),
        ("Twin", "Twin over Full", "Solid Wood", "Metal", "House-Shaped"),
        ("Trundle", "Slide", "Storage Drawers"),
    ),
    "Kids > Kids Chairs": (
        ("Kids Chair", "Kids Armchair", "Toddler Chair", "Kids Table and Chair Set"),
        ("Upholstered", "Plastic", "Solid Wood", "Animal", "Rainbow"),
        ("Storage", "Set of 2", "Cup Holder"),
    ),
    "Kitchen > Cookware > Frying Pans": (
        ("Frying Pan", "Skillet", "Saute Pan", "Griddle Pan", "Pan"),
        ("Nonstick", "Cast Iron", "Stainless Steel", "Ceramic", "10-Inch", "12-Inch"),
        ("Lid", "Helper Handle", "Pour Spouts"),
    ),
    "Kitchen > Cookware > Pots": (
        ("Stock Pot", "Dutch Oven", "Saucepan", "Pot", "Soup Pot"),
        ("Enameled", "Cast Iron", "Stainless Steel", "Nonstick", "5-Quart", "8-Quart"),
        ("Lid", "Steamer Insert", "Pour Spouts"),
    ),
    "Kitchen > Small Appliances > Coffee Makers": (
        ("Coffee Maker", "Espresso Machine", "Drip Coffee Maker", "Pour Over Coffee Maker"),
        ("12-Cup", "Programmable", "Single-Serve", "Stainless Steel", "Black"),
        ("Thermal Carafe", "Milk Frother", "Grinder"),
    ),
    "Kitchen > Small Appliances > Blenders": (
        ("Blender", "Countertop Blender", "Personal Blender", "Immersion Blender"),
        ("High-Speed", "1200-Watt", "Stainless Steel", "Black", "Cordless"),
        ("To-Go Cups", "Tamper", "Glass Jar"),
    ),
    "Kitchen > Tableware > Dinnerware Sets": (
        ("Dinnerware Set", "Dish Set", "Plates and Bowls Set", "Dinner Plates"),
        ("Stoneware", "Porcelain", "16-Piece", "Service for 4", "Matte", "White"),
        ("Mugs", "Salad Plates", "Serving Bowls"),
    ),
    "Bath > Towels": (
        ("Bath Towel", "Towel Set", "Hand Towel", "Bath Sheet", "Towel"),
        ("Cotton", "Turkish Cotton", "Quick-Dry", "Plush", "6-Piece", "White"),
        ("Hanging Loop", "Washcloths", "Hand Towels"),
    ),
    "Bath > Shower Curtains": (
        ("Shower Curtain", "Shower Curtain Liner", "Fabric Shower Curtain"),
        ("Waterproof", "Linen", "Striped", "Botanical", "Extra Long", "Waffle"),
        ("Hooks", "Weighted Hem", "Magnets"),
    ),
    "Bath > Bathroom Vanities": (
        ("Bathroom Vanity", "Vanity", "Vanity Cabinet", "Double Vanity"),
        ("36-Inch", "48-Inch", "Single Sink", "Double Sink", "Floating", "Oak"),
        ("Marble Top", "Mirror", "Soft-Close Doors"),
    ),
    "Outdoor > Patio Furniture > Patio Chairs": (
        ("Patio Chair", "Adirondack Chair", "Outdoor Chair", "Lounge Chair", "Rocking Chair"),
        ("Teak", "Wicker", "Metal", "Weather-Resistant", "Folding", "Set of 2"),
        ("Cushions", "Ottoman", "Side Table"),
    ),
    "Outdoor > Patio Furniture > Patio Dining Sets": (
        ("Patio Dining Set", "Outdoor Dining Set", "Bistro Set", "Patio Table"),
        ("Teak", "Wicker", "Metal", "5-Piece", "7-Piece", "Weather-Resistant"),
        ("Umbrella Hole", "Cushions", "Folding Chairs"),
    ),
    "Outdoor > Grills": (
        ("Gas Grill", "Charcoal Grill", "Pellet Grill", "Grill", "Smoker"),
        ("Propane", "Stainless Steel", "Portable", "3-Burner", "4-Burner", "Kettle"),
        ("Side Burner", "Cover", "Thermometer"),
    ),
    "Outdoor > Planters": (
        ("Planter", "Plant Pot", "Raised Garden Bed", "Window Box", "Pot"),
        ("Ceramic", "Terracotta", "Fiberglass", "Self-Watering", "Large", "Set of 3"),
        ("Drainage Hole", "Saucer", "Stand"),
    ),
}
COLOURS = (
    "Grey",
    "White",
    "Black",
    "Navy",
    "Beige",
    "Green",
    "Blue",
    "Cream",
    "Brown",
    "Charcoal",
    "Blush",
    "Ivory",
)
_SYLLABLES = (
    "nor",
    "dha",
    "ven",
    "lu",
    "mi",
    "sol",
    "ka",
    "ri",
    "bel",
    "mont",
    "ash",
    "fa",
    "tor",
    "eli",
    "qua",
    "zen",
)
DEPARTMENTS = sorted({path.split(" > ")[0] for path in TAXONOMY})


def _brands(rng: random.Random, n: int) -> list[tuple[str, tuple[str, ...]]]:
    """Made-up brand names, each active in two or three departments."""
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize())
    return [(name, tuple(rng.sample(DEPARTMENTS, rng.choice((2, 3))))) for name in sorted(names)]


def generate_catalogue(num_products: int, seed: int = 0) -> Catalogue:
    """Deterministic for (num_products, seed): uses its own random.Random, never hash() or global state."""
    rng = random.Random(seed)
    brands = _brands(rng, 40)
    leaves = sorted(TAXONOMY)
    # Uneven popularity, like a real store, but every leaf keeps a floor of products.
    weights = [rng.uniform(0.6, 1.6) for _ in leaves]
    floor = max(1, num_products // (4 * len(leaves)))
    counts = [floor] * len(leaves)
    for i in rng.choices(range(len(leaves)), weights=weights, k=max(0, num_products - floor * len(leaves))):
        counts[i] += 1
    products: list[Product] = []
    seen: set[str] = set()
    for leaf, count in zip(leaves, counts, strict=True):
        nouns, attributes, features = TAXONOMY[leaf]
        department = leaf.split(" > ")[0]
        local_brands = [b for b, depts in brands if department in depts] or [b for b, _ in brands]
        for _ in range(count):
            title = ""
            for _attempt in range(5):  # retry a few times for a unique title, then accept a duplicate
                brand = rng.choice(local_brands)
                attrs = rng.sample(attributes, rng.choice((1, 1, 2)))
                parts = [brand, *attrs, rng.choice(nouns)]
                if rng.random() < 0.4:
                    parts += ["with", rng.choice(features)]
                title = " ".join(parts)
                if rng.random() < 0.6:
                    title += f", {rng.choice(COLOURS)}"
                if title not in seen:
                    break
            seen.add(title)
            products.append(Product(id=f"P{len(products):06d}", title=title, category=leaf, brand=brand))
    return Catalogue(products=tuple(products), categories=tuple(leaves))
