"""A fixed set of realistic voice-assistant utterances, 10-12 words each, across the seven SNIPS intents.

Written for the benchmark (not taken from the SNIPS data), so the numbers are comparable across bundles.
"""

UTTERANCES: tuple[str, ...] = (
    "add the new taylor swift song to my summer road trip playlist",
    "please put this track by the rolling stones on my workout mix",
    "can you add some relaxing piano music to my evening chill playlist",
    "include the latest coldplay album in my favorite songs of all time",
    "book a table for four at an italian restaurant near downtown tonight",
    "i need a reservation for two people at a sushi bar tomorrow",
    "reserve a spot for six at the steakhouse on main street friday",
    "find me a table at a vegetarian place in boston next saturday",
    "what will the weather be like in seattle this coming weekend",
    "is it going to rain in new york city tomorrow afternoon",
    "tell me the forecast for chicago on the first of december please",
    "how cold will it be in denver colorado on monday morning",
    "play some jazz from the fifties by miles davis on spotify",
    "i want to hear the newest album by kendrick lamar right now",
    "put on a song by the beatles from the sixties please",
    "start playing classical music by mozart on the living room speaker",
    "rate this book four out of five stars for the plot",
    "give the current novel i am reading a rating of three points",
    "i would rate the hunger games trilogy five stars out of six",
    "give this textbook two stars because the chapters are too long",
    "find the movie called the lord of the rings return of the king",
    "search for a video game called the legend of zelda breath of the wild",
    "can you look up the tv show breaking bad for me please",
    "i am looking for the soundtrack of the movie pulp fiction",
    "what movies are playing at the nearest cinema this evening after six",
    "show me the movie schedule at the amc theater in the city",
    "when is the next showing of the new batman film near me",
    "find movie times for animated films at the local theatre tomorrow",
    "add an album by adele to the playlist called rainy day songs",
    "book a restaurant that serves mexican food for eight people at noon",
    "will there be snow in the mountains near salt lake city tonight",
    "play the top rated rock songs from the nineties on deezer please",
)
