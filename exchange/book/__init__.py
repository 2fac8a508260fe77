"""Open bidding: the continuous price-time-priority order book."""

from exchange.book.order_book import BookState, DayStatistics, OrderBook, RestingOrder, TradeIds

__all__ = ["BookState", "DayStatistics", "OrderBook", "RestingOrder", "TradeIds"]
