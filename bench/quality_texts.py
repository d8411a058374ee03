"""Texts for ``python -m kvx bench codec_quality``: ordinary English prose, instructions, Python
code and a chat transcript (in SmolLM2's ``<|im_start|>`` chat format), written for this
benchmark. Each is a few hundred tokens, so a prefix of half a text spans one or two codec chunks.
"""

from __future__ import annotations

PROSE = """\
The harbour town woke slowly in winter. Before the sun came up, the bakers were already at work,
and the smell of bread drifted down the narrow streets towards the water. Fishermen checked their
nets by the light of a single lamp, talking quietly about the weather and the price of fuel. Most
of them had grown up in the town, and their fathers had fished the same grey sea before them.

By eight o'clock the school bus climbed the hill with its windows fogged, and the shops along the
main street raised their shutters one by one. The post office opened last. Its owner, an old man
who had run it for forty years, liked to say that nothing important ever arrived before nine.

Visitors rarely came in this season. In summer the town was full of families who rented the white
houses near the beach, swam in the cold water and ate ice cream on the harbour wall. In winter the
houses stood empty, their gardens overgrown, and the only sound on the beach was the wind. Some
people found this sad, but many of the people who lived there all year preferred it. They knew
each other by name, they helped when a roof was damaged in a storm, and they met every Friday
evening in the small hall behind the church to play cards and argue about local politics.

The town had changed, of course. The old fish market had become a museum, and the railway line
that once carried the catch to the city had closed long ago. Young people left for the university
and did not always come back. Yet every spring, when the first boats returned with full nets and
the days grew longer, there was a feeling that the place would go on as it always had: quietly,
stubbornly, and on its own terms. The mayor often said that a town is not its buildings but its
habits, and that as long as the bakers rose early and the boats went out, the harbour would live.
"""

INSTRUCTIONS = """\
How to repot a house plant

You will need a new pot that is one size larger than the old one, fresh potting soil, a small
trowel, a watering can and some old newspaper to protect your table.

1. Water the plant a day before you repot it. Moist soil holds together better, and the roots
will slide out of the old pot more easily.

2. Spread the newspaper on your work surface. Turn the old pot on its side, hold the plant gently
at the base of the stem, and tap the bottom of the pot until the root ball comes free. If the
roots are stuck, run a knife around the inside edge of the pot.

3. Look at the roots. Healthy roots are firm and white or light brown. Cut away any roots that
are soft, black or smell bad, because they are rotting and can spread the problem.

4. Loosen the outer roots with your fingers, especially if they circle around the root ball.
This encourages them to grow outwards into the new soil.

5. Put a layer of fresh soil in the bottom of the new pot. Set the plant on top so that the top
of the root ball sits about two centimetres below the rim.

6. Fill the space around the root ball with soil, pressing it down lightly as you go. Do not pack
it too hard: roots need air as well as water.

7. Water the plant slowly until water runs out of the drainage holes. Let it drain completely,
and empty the saucer after half an hour.

8. Keep the plant out of direct sunlight for about a week while it recovers. After that, return
it to its usual place and care for it as before. Most plants need repotting every one or two
years, in spring, when they start to grow again.
"""

CODE = '''\
"""A small inventory for a shop: items, stock levels and reorder reports."""

from dataclasses import dataclass, field


@dataclass
class Item:
    """One product on the shelves."""

    name: str
    price: float
    quantity: int = 0
    reorder_level: int = 5

    def needs_reorder(self) -> bool:
        """True when the stock has fallen to the reorder level or below."""
        return self.quantity <= self.reorder_level


@dataclass
class Inventory:
    """All the items of a shop, by name."""

    items: dict[str, Item] = field(default_factory=dict)

    def add(self, item: Item) -> None:
        if item.name in self.items:
            raise ValueError(f"item {item.name!r} already exists")
        self.items[item.name] = item

    def sell(self, name: str, count: int = 1) -> float:
        """Removes count units from the stock and returns the price to charge."""
        item = self.items[name]
        if count > item.quantity:
            raise ValueError(f"only {item.quantity} of {name!r} left")
        item.quantity -= count
        return item.price * count

    def restock(self, name: str, count: int) -> None:
        self.items[name].quantity += count

    def total_value(self) -> float:
        return sum(item.price * item.quantity for item in self.items.values())

    def reorder_report(self) -> list[str]:
        """Names of the items to order again, sorted alphabetically."""
        return sorted(name for name, item in self.items.items() if item.needs_reorder())


def main() -> None:
    shop = Inventory()
    shop.add(Item("apple", 0.5, quantity=40))
    shop.add(Item("bread", 2.25, quantity=6))
    shop.add(Item("milk", 1.1, quantity=3, reorder_level=10))
    total = shop.sell("apple", 12) + shop.sell("bread", 2)
    print(f"sold goods for {total:.2f}")
    print(f"stock value: {shop.total_value():.2f}")
    for name in shop.reorder_report():
        print(f"reorder: {name}")


if __name__ == "__main__":
    main()
'''

CHAT = """\
<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
Hi! I am going to the mountains next weekend. What should I pack for a two day hike?<|im_end|>
<|im_start|>assistant
That sounds like a great trip! For a two day hike, here is a simple packing list:

- A comfortable backpack of about 40 litres
- Good hiking boots that you have already worn in
- Layers of clothing: a base layer, a warm fleece and a waterproof jacket
- A hat, gloves and sunglasses, because mountain weather changes quickly
- Enough water, or a filter so you can refill from streams
- Food for both days, plus some extra snacks
- A map, a compass and a fully charged phone
- A small first aid kit and sun cream
- A sleeping bag and a tent, unless you are staying in a hut

Would you like advice on where to sleep or on planning the route?<|im_end|>
<|im_start|>user
We will stay in a mountain hut. How far can a beginner walk in one day?<|im_end|>
<|im_start|>assistant
Staying in a hut makes things easier, since you do not need to carry a tent or a stove.

A beginner can usually walk between 10 and 15 kilometres in a day in the mountains, but the
distance matters less than the climb. A common rule is to allow one hour for every 4 kilometres
on flat ground, and to add one hour for every 600 metres of ascent. Take regular breaks, drink
before you feel thirsty, and start early so that you reach the hut well before dark.

If this is your first mountain hike, choose a route with a total climb of less than 800 metres
on the first day. You can always do a longer walk next time.<|im_end|>
<|im_start|>user
Thanks, that is really helpful. Should I book the hut in advance?<|im_end|>
<|im_start|>assistant
Yes, you should book in advance, especially at the weekend in summer. Many huts are full weeks
ahead, and some do not accept guests without a reservation. When you book, ask whether meals are
included, whether you need to bring a sleeping bag liner, and what time dinner is served. It is
also polite to call the hut if your plans change, so that they can give your place to someone
else.<|im_end|>
"""

TEXTS: dict[str, str] = {
    "prose": PROSE,
    "instructions": INSTRUCTIONS,
    "code": CODE,
    "chat": CHAT,
}
